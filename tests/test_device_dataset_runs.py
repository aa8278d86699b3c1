"""dataset.on_device through the real CLI: 2 processes x 2 devices train and score kNN like 1
process x 4 devices (tolerances of test_multiprocess.py: only float reduction order differs),
and a run killed with SIGKILL then resumed ends bitwise equal to the uninterrupted run."""
import os
import signal
import subprocess

import numpy as np
import pytest

from test_multiprocess import (  # noqa: F401 (_remove_compile_cache: autouse cleanup)
    PYTHON, TIMEOUT_S, TwoProcesses, _remove_compile_cache, assert_close_metrics,
    assert_close_trees, child_env, final_arrays, main_args, read_json, run_reference, wait_for)
from tiny_configs import ROOT

ON_DEVICE = {"dataset.on_device": True}
LONG = {**ON_DEVICE, "num_steps": 30, "checkpoint_every_steps": 2,
        "dataset.knn_train_split": ""}


def flags(overrides: dict) -> list:
    return [f"--config.{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in overrides.items()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Both jobs once in 1 process x 4 devices (one interpreter start)."""
    root = tmp_path_factory.mktemp("on_device_reference")
    run_reference([("quickstart.py", str(root / "short"), ON_DEVICE),
                   ("quickstart.py", str(root / "long"), LONG)], root)
    return root


def test_on_device_two_processes_equal_one(reference, tmp_path):
    workdir = tmp_path / "two"
    TwoProcesses("simclr_jax.main", main_args("quickstart.py", workdir, *flags(ON_DEVICE)),
                 tmp_path, "on_device").wait_ok()
    got, want = read_json(workdir, "final_metrics.json"), read_json(reference / "short",
                                                                     "final_metrics.json")
    assert got["step"] == want["step"] == 3
    assert_close_metrics(got, want, ["loss", "total_loss"])
    assert_close_metrics(got, want, ["knn_top1"], 360)      # the digits' 360 test images
    assert_close_trees(final_arrays(workdir), final_arrays(reference / "short"))


def test_on_device_kill_9_and_resume_is_exact(reference, tmp_path):
    workdir = tmp_path / "killed"
    cmd = [PYTHON, "-m", "simclr_jax.main", *main_args("quickstart.py", workdir, *flags(LONG))]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(4), stdout=log,
                                stderr=subprocess.STDOUT)
    ckpts = workdir / "checkpoints"
    wait_for(lambda: ckpts.is_dir() and "2" in os.listdir(ckpts) or proc.poll() is not None,
             what="the first checkpoint")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=TIMEOUT_S) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    steps = sorted(int(p) for p in os.listdir(ckpts) if p.isdigit())
    assert steps and steps[-1] < 30, steps
    r = subprocess.run(cmd, cwd=ROOT, env=child_env(4), capture_output=True, text=True,
                       timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_json(workdir, "final_metrics.json")["step"] == 30
    got, want = final_arrays(workdir), final_arrays(reference / "long")
    for a, b in zip(*(sorted(__import__("jax").tree_util.tree_leaves_with_path(t),
                             key=lambda kv: str(kv[0])) for t in (got, want))):
        np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]), err_msg=str(a[0]))
