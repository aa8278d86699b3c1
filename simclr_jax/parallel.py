"""Device mesh and shardings: data parallelism over one mesh axis, the same code on 1 CPU or a pod.

The loss is written over the GLOBAL batch; with the batch sharded on "data" and parameters
replicated, XLA inserts the collectives (cross-replica BN statistics, all-gathered negatives).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from simclr_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """One-axis mesh over all (or the given) devices, in the order jax lists them."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_divisible(global_batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    """The global batch must split evenly over the devices (and so over the processes, which
    hold equal numbers of devices); say how to fix it when it does not. `name`: its config key."""
    n = mesh.devices.size
    if global_batch_size <= 0 or global_batch_size % n:
        lower = max(n, (global_batch_size // n) * n)
        raise UserError(
            f"{name}={global_batch_size} does not divide over {n} devices; "
            f"use a multiple of {n}, e.g. --config.{name}={lower} or {lower + n}.")


def to_global(mesh: Mesh, local_tree):
    """Per-process numpy batch -> global jax.Arrays sharded on the batch axis (multi-host safe)."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)


def local_rows(x, n: int) -> np.ndarray:
    """Up to the first n rows this process holds of a batch-sharded array, as numpy, with no
    cross-host transfer. On process 0 they are the first rows of the global batch."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(jax.device_get(x))[:n]
    shards = {s.index[0].start or 0: s for s in x.addressable_shards}  # replicas: one per row
    rows = [np.asarray(shards[start].data) for start in sorted(shards)]
    return np.concatenate(rows)[:n]


def replicate(mesh: Mesh, tree):
    """Place a pytree (e.g. the train state) replicated on every device of the mesh."""
    return jax.device_put(tree, replicated_sharding(mesh))


class DispatchThrottle:
    """Bounds how many dispatched-but-unfinished steps there are (JAX dispatches asynchronously).

    On the CPU backend with several (virtual) devices, many small steps in flight can deadlock
    XLA's collective rendezvous (participants of step k+1 hold the worker threads that step k
    still needs; XLA aborts after 40 s). On CPU we therefore wait for each step before
    dispatching the next; on accelerators one step may run ahead, which keeps them busy.
    """

    def __init__(self, max_in_flight: int | None = None):
        if max_in_flight is None:
            max_in_flight = 1 if jax.devices()[0].platform == "cpu" else 2
        self.max_in_flight = max_in_flight
        self._pending: list = []

    def __call__(self, outputs):
        """Register a step's outputs; block on the oldest ones beyond the bound."""
        self._pending.append(outputs)
        while len(self._pending) > self.max_in_flight - 1:     # 1 -> wait for this step
            jax.block_until_ready(self._pending.pop(0))
        return outputs
