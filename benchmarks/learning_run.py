"""A learning run on an image folder for a fixed step budget: loss falls, kNN beats random init.

    python benchmarks/learning_run.py --config configs/moco_v2.py:cifar10 \
        --data /path/to/cifar10-train --holdout 500 --steps 300 --workdir /tmp/bench_moco_v2 \
        --set model.width=0.25 --set batch_size=256

The last `--holdout` images of every class are held out: the kNN memory bank is the training
images, the scored set the held-out ones. Prints one Markdown row for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import time

import jax
from absl import logging

from simclr_jax import train
from simclr_jax.config_base import load_config_file


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True, help="configs/<file>.py[:preset]")
    p.add_argument("--data", required=True, help="image folder with class sub-folders")
    p.add_argument("--holdout", type=int, default=500, help="held-out images per class")
    p.add_argument("--per_class", type=int, default=5000, help="images per class in the folder")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", action="append", default=[], help="key=value config override")
    a = p.parse_args()
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)

    path, _, preset = a.config.partition(":")
    c = load_config_file(path, preset or None)
    keep = a.per_class - a.holdout
    c.dataset.name = f"folder:{os.path.abspath(a.data)}"
    c.dataset.data_dir = None
    c.dataset.train_split = f"train[:{keep}]"
    c.dataset.knn_train_split = f"train[:{keep}]"
    c.dataset.knn_test_split = f"train[{keep}:]"
    c.num_epochs, c.num_steps = None, a.steps
    c.eval.every_steps = a.steps
    c.eval.knn_at_init = True
    c.log_every_steps = max(1, a.steps // 20)
    c.checkpoint_every_steps = a.steps
    for item in a.set:
        key, _, value = item.partition("=")
        node = c
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = parse_value(value)
    if c.method == "moco":
        c.moco.queue_size = min(c.moco.queue_size, (keep * 10 // c.batch_size) * c.batch_size)

    t0 = time.time()
    summary = train.train_and_evaluate(c, a.workdir)
    minutes = (time.time() - t0) / 60
    events = os.path.join(a.workdir, "first_last_loss.json")
    row = (f"| {a.config} | {c.model.name}{c.model.get('depth', '')} w{c.model.width:g} | "
           f"{c.batch_size} | {a.steps} | {minutes:.1f} | {summary.get('loss', float('nan')):.3f} | "
           f"{summary['knn_top1']:.3f} | {summary['knn_top1_init']:.3f} |")
    print(f"# {platform.node()} | {jax.devices()[0].device_kind} x{jax.device_count()} | "
          f"cpus {os.cpu_count()}")
    print("| config | model | batch | steps | minutes | final loss | kNN top-1 | kNN top-1 random init |")
    print("|---|---|---|---|---|---|---|---|")
    print(row)
    with open(events, "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
