"""Joining a multi-process JAX cluster: JAX's own cluster detection, or explicit settings.

Cloud TPU VM slices (GCE metadata), GKE TPU pods (TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES
with TPU_WORKER_ID), SLURM (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID,
SLURM_LOCALID), Open MPI and Kubernetes jobs are recognised by `jax.distributed.initialize()`
itself; a hand-made cluster names the coordinator, the process count and this process's id, by
flag or by the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.

A process that dies (kill -9, a lost host) stops sending heartbeats; after `heartbeat_timeout_s`
the coordination service declares it dead and the other processes abort with an error naming
the lost task, instead of waiting in a collective forever.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional

from absl import logging
import jax

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
DEFAULT_HEARTBEAT_TIMEOUT_S = 30


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """What this process knows about the cluster before joining it (None = let JAX detect)."""
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None

    @property
    def explicit(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))


def _env_int(env: Mapping[str, str], name: str) -> Optional[int]:
    value = env.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer.") from None


def resolve_settings(coordinator_address: Optional[str] = None,
                     num_processes: Optional[int] = None, process_id: Optional[int] = None,
                     env: Mapping[str, str] = os.environ) -> ClusterSettings:
    """Flags win over the JAX_* environment variables; anything left None is detected by JAX."""
    settings = ClusterSettings(
        coordinator_address=coordinator_address or env.get(ENV_COORDINATOR) or None,
        num_processes=num_processes if num_processes is not None else _env_int(
            env, ENV_NUM_PROCESSES),
        process_id=process_id if process_id is not None else _env_int(env, ENV_PROCESS_ID))
    if settings.num_processes is not None and settings.num_processes < 1:
        raise ValueError(f"the number of processes must be >= 1, got {settings.num_processes}.")
    if (settings.process_id is not None and settings.num_processes is not None
            and not 0 <= settings.process_id < settings.num_processes):
        raise ValueError(f"process id {settings.process_id} is outside [0, "
                         f"{settings.num_processes}); ids run from 0 to num_processes - 1.")
    return settings


def detected_cluster() -> Optional[str]:
    """The name of the cluster environment JAX's auto-detection would use, or None.

    JAX has no public query for this, so we ask its registry of cluster environments (the same
    classes `jax.distributed.initialize()` iterates over), skipping the opt-in ones (mpi4py).
    """
    try:
        from jax._src import clusters
    except ImportError:  # a JAX without the registry: rely on explicit settings only
        return None
    for env in clusters.ClusterEnv._cluster_types:
        if not env.opt_in_only_method and env.is_env_present():
            return env.name or env.__name__
    return None


def join(mode: str, settings: ClusterSettings,
         heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S) -> bool:
    """Call jax.distributed.initialize() when asked to ("on") or when there is a cluster to join
    ("auto": explicit settings or a detected environment). Returns whether it did."""
    if mode == "off":
        return False
    cluster = detected_cluster()
    if mode == "auto" and not settings.explicit and cluster is None:
        return False
    logging.info("Joining the JAX cluster (%s).",
                 "explicit settings" if settings.explicit else f"detected: {cluster}")
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator_address,
            num_processes=settings.num_processes, process_id=settings.process_id,
            heartbeat_timeout_seconds=heartbeat_timeout_s)
    except ValueError as e:  # a setting JAX could neither read nor detect
        raise ValueError(
            f"cannot join the cluster: {e} Pass --coordinator_address=HOST:PORT, "
            f"--num_processes and --process_id (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, "
            f"{ENV_PROCESS_ID}), or --distributed=off for a single process.") from None
    return True
