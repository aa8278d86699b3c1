"""Learning curves as PNG from a run's TensorBoard events (for BENCHMARKS.md).

    python benchmarks/plot_curves.py --out curves.png --tags loss,knn_top1 \
        RUN_DIR [LABEL=RUN_DIR ...]

Reads every events file under each run directory (clu writes them at the workdir's top level),
plots one panel per tag with one line per run. Needs matplotlib (`pip install -e '.[bench]'`).
"""
from __future__ import annotations

import argparse
import collections
import glob
import os

import numpy as np
import tensorflow as tf


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every events file directly under `run_dir`."""
    series = collections.defaultdict(list)
    paths = sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))
    if not paths:
        raise SystemExit(f"error: no TensorBoard events file in {run_dir!r}; pass a workdir "
                         f"of a training or evaluation run.")
    for path in paths:
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and not value.tensor.string_val:
                    array = tf.make_ndarray(value.tensor)
                    if array.size != 1:
                        continue
                    number = float(array.reshape(()))
                else:
                    continue
                series[value.tag].append((int(event.step), float(number)))
    return {tag: sorted(points) for tag, points in series.items()}


def plot(runs: dict[str, dict], tags: list[str], out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tags), figsize=(4.2 * len(tags), 3.2), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for label, series in runs.items():
            if tag in series:
                steps, values = np.array(series[tag]).T
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
        ax.set_title(tag)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="RUN_DIR or LABEL=RUN_DIR")
    p.add_argument("--tags", required=True, help="comma-separated scalar tags to plot")
    p.add_argument("--out", required=True, help="PNG path")
    a = p.parse_args()
    runs = {}
    for item in a.runs:
        label, _, path = item.rpartition("=")
        runs[label or os.path.basename(os.path.normpath(path))] = read_scalars(path)
    tags = [t for t in a.tags.split(",") if t]
    missing = [t for t in tags if not any(t in s for s in runs.values())]
    if missing:
        known = sorted(set().union(*runs.values()))
        raise SystemExit(f"error: no run logged {missing}; logged tags: {', '.join(known)}")
    plot(runs, tags, a.out)


if __name__ == "__main__":
    main()
