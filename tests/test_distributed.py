"""Cluster settings: flags win over JAX_* variables; mistakes are one clear line (status 2)."""
import os
import re
import subprocess
import sys

import pytest
from tiny_configs import ROOT

from simclr_jax import distributed


def test_flags_override_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
           "JAX_PROCESS_ID": "3"}
    assert distributed.resolve_settings(env=env) == distributed.ClusterSettings(
        "10.0.0.1:1234", 4, 3)
    got = distributed.resolve_settings("h:1", 2, 0, env=env)
    assert got == distributed.ClusterSettings("h:1", 2, 0) and got.explicit
    assert not distributed.resolve_settings(env={}).explicit


@pytest.mark.parametrize("env, message", [
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "process id 2 is outside [0, 2)"),
    ({"JAX_NUM_PROCESSES": "0"}, "must be >= 1"),
])
def test_bad_settings(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        distributed.resolve_settings(env=env)


def test_cli_incomplete_cluster_is_one_clear_line(tmp_path):
    """A process count without a coordinator (and no cluster JAX can detect): status 2, one line
    naming the flags, no traceback (the old CLI died with JAX's traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "TPU_"))}
    env.update(JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1", PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "simclr_jax.main",
                        f"--config={ROOT}/configs/quickstart.py", f"--workdir={tmp_path}"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--coordinator_address" in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
