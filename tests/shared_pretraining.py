"""One tiny SimCLR pretraining per pytest session, shared by the evaluation-protocol tests.

XLA compilation dominates these tests; pretraining once (2 steps, kNN at the end) instead of
once per test file saves a full train-step compile when the files run together.
"""
import json

from tiny_configs import tiny

from simclr_jax import train


def pretrained_workdir(tmp_path_factory) -> tuple[str, dict]:
    """(workdir, final metrics) of a 2-step pretraining of the quickstart config on digits."""
    root = tmp_path_factory.getbasetemp() / "shared_pretraining"
    metrics = root / "final_metrics.json"
    if not metrics.exists():
        train.train_and_evaluate(tiny(steps=2), str(root))
    with open(metrics) as f:
        return str(root), json.load(f)
