"""Does a `,runlocal` preset learn, or is its kNN gain the seed's? Learned vs no-learning, per seed.

    python benchmarks/runlocal_seeds.py --config configs/swav.py:cifar10,runlocal \
        --workdir /tmp/seeds --seeds 0,1,2 --config.num_steps=60 \
        --config.swav.freeze_prototypes_niters=180 --config.aug.on_device=true

For each seed it trains the config, then (unless --nostill) the same config at base_lr 1e-7 (the
same steps and batches: only the BN running statistics move), with --control the same config
with `break_positive_pairs` (no positive pair to learn from), and scores the encoders and the
encoder at init (with the bank's BN statistics, eval.init_bn_batches) with the config's kNN
monitor. The no-learning run is the baseline with the training crops' BN statistics; the two
agree within 0.008-0.025 on CMC's digits (tests/test_cmc.py).
Runs on one CPU device with the tests' XLA flags unless XLA_FLAGS is set: a run at this size is
chaotic, and another optimisation level rounds differently and gives another number (SwAV seed
0 below: 0.928 at level 0, 0.908 at the default). Prints one Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1 "
                                   "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import time  # noqa: E402

import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from simclr_jax import train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<file>.py[:preset]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "a directory for the runs (one per seed and LR)")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds to run")
_STILL = flags.DEFINE_bool("still", True, "also run each seed at base_lr 1e-7 (no learning)")
_CONTROL = flags.DEFINE_bool("control", False, "also run each seed with break_positive_pairs "
                             "(the negative control: no positive pair to learn from)")
flags.mark_flags_as_required(["config", "workdir"])

STILL_LR = 1e-7


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    config.log_images = False
    return train.train_and_evaluate(config, workdir)


def main(argv):
    del argv
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    rows = ["| seed | learned | no learning (base_lr 1e-7) | control (pairs broken) | init "
            "| learned - no learning | learned - control | learned - init "
            "| loss: learned / no learning / control | s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    nan = {"knn_top1": float("nan"), "loss": float("nan")}
    for seed in map(int, _SEEDS.value):
        start = time.time()
        learned = ml_collections.ConfigDict(_CONFIG.value.to_dict())
        learned.seed = seed
        still = ml_collections.ConfigDict(learned.to_dict())
        still.optimizer.base_lr, still.eval.knn_at_init = STILL_LR, False
        control = ml_collections.ConfigDict(learned.to_dict())
        control.break_positive_pairs, control.eval.knn_at_init = True, False
        a = run(learned, os.path.join(_WORKDIR.value, f"seed{seed}_learned"))
        b = run(still, os.path.join(_WORKDIR.value, f"seed{seed}_still")) if _STILL.value else nan
        c = (run(control, os.path.join(_WORKDIR.value, f"seed{seed}_control")) if _CONTROL.value
             else nan)
        rows.append(f"| {seed} | {a['knn_top1']:.3f} | {b['knn_top1']:.3f} | "
                    f"{c['knn_top1']:.3f} | {a['knn_top1_init']:.3f} | "
                    f"{a['knn_top1'] - b['knn_top1']:+.3f} | {a['knn_top1'] - c['knn_top1']:+.3f} | "
                    f"{a['knn_top1'] - a['knn_top1_init']:+.3f} | "
                    f"{a['loss']:.3f} / {b['loss']:.3f} / {c['loss']:.3f} | "
                    f"{time.time() - start:.0f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    app.run(main)
