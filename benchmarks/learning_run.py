"""A learning run on an image folder for a fixed step budget: loss falls, kNN beats random init.

    python benchmarks/learning_run.py --config configs/moco_v2.py:cifar10 \
        --data /path/to/cifar10-train --holdout 500 --steps 300 --workdir /tmp/bench_moco_v2 \
        --config.model.width=0.25 --config.batch_size=256

The last `--holdout` images of every class are held out: the kNN memory bank is the training
images, the scored set the held-out ones. Config overrides are checked like the trainer's (a
mistyped key fails); the dataset, splits, length and eval cadence are set from the flags above.
Prints one Markdown row for BENCHMARKS.md.
"""
from __future__ import annotations

import json
import os
import platform
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from simclr_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<file>.py[:preset]",
                                          lock_config=True)
_DATA = flags.DEFINE_string("data", None, "image folder with class sub-folders")
_HOLDOUT = flags.DEFINE_integer("holdout", 500, "held-out images per class")
_PER_CLASS = flags.DEFINE_integer("per_class", 5000, "images per class in the folder")
_STEPS = flags.DEFINE_integer("steps", None, "training steps")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory")
flags.mark_flags_as_required(["config", "data", "steps", "workdir"])


def main(argv):
    del argv
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    c, steps = _CONFIG.value, _STEPS.value
    keep = _PER_CLASS.value - _HOLDOUT.value
    c.dataset.name = f"folder:{os.path.abspath(_DATA.value)}"
    c.dataset.data_dir = None
    c.dataset.train_split = f"train[:{keep}]"
    c.dataset.knn_train_split = f"train[:{keep}]"
    c.dataset.knn_test_split = f"train[{keep}:]"
    c.num_epochs, c.num_steps = None, steps
    c.eval.every_steps = steps
    c.eval.knn_at_init = True
    c.log_every_steps = max(1, steps // 20)
    c.checkpoint_every_steps = steps
    if c.method == "moco":
        c.moco.queue_size = min(c.moco.queue_size, (keep * 10 // c.batch_size) * c.batch_size)

    t0 = time.time()
    pipelines: list = []    # destroyed after the timing (see train_and_evaluate's keep_alive)
    summary = train.train_and_evaluate(c, _WORKDIR.value, keep_alive=pipelines)
    minutes = (time.time() - t0) / 60
    events = os.path.join(_WORKDIR.value, "first_last_loss.json")
    config_name = config_flags.get_config_filename(flags.FLAGS["config"])
    row = (f"| {config_name} | {c.model.name}{c.model.get('depth', '')} w{c.model.width:g} | "
           f"{c.batch_size} | {steps} | {minutes:.1f} | {summary.get('loss', float('nan')):.3f} | "
           f"{summary['knn_top1']:.3f} | {summary['knn_top1_init']:.3f} |")
    print(f"# {platform.node()} | {jax.devices()[0].device_kind} x{jax.device_count()} | "
          f"cpus {os.cpu_count()}")
    print("| config | model | batch | steps | minutes | final loss | kNN top-1 | kNN top-1 random init |")
    print("|---|---|---|---|---|---|---|---|")
    print(row)
    with open(events, "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    app.run(main)
