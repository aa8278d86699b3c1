"""Learning checks through the CLI: a config's `,runlocal` preset run as a user runs it.

The baseline is the run's own `knn_top1_init`: the encoder at initialisation, scored with BN
statistics of the kNN bank's images (train.py, eval.init_bn_batches). Until 2026-12-07 it kept
init's running statistics (0, 1), i.e. no normalisation, which on the digits scored above the
same random weights with any data's statistics (CMC seed 0: 0.911 vs 0.858 with the bank's
and 0.866 after the same 90 steps at LR 1e-7), so a batch-normalised encoder had to make up for
the statistics before it could beat init (benchmarks/runlocal_seeds.py)."""
import json
import os
import subprocess
import sys

from tiny_configs import ROOT

# Learning is the recipe's property, not the topology's (2 processes = 1 and 8 devices = 1 are
# tested elsewhere): on one device a runlocal CLI run takes 32 s instead of 54 (CMC, 60 steps).
ONE_DEVICE = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"


def run_runlocal(workdir, file: str, preset: str, overrides: list) -> dict:
    """`python -m simclr_jax.main --config configs/FILE:PRESET,runlocal` on one CPU device ->
    its final_metrics."""
    cmd = [sys.executable, "-m", "simclr_jax.main", "--config",
           os.path.join(ROOT, "configs", f"{file}:{preset},runlocal"), "--workdir",
           str(workdir), "--config.num_steps=30", "--config.log_images=false", *overrides]
    env = dict(os.environ, XLA_FLAGS=ONE_DEVICE)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.load(open(os.path.join(workdir, "final_metrics.json")))
