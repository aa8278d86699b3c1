"""Train-step throughput (images/s; each image = 2 views) on whatever devices JAX sees.

    python benchmarks/train_step_throughput.py                      # the default table
    python benchmarks/train_step_throughput.py --cases quickstart,r18_32px --steps 10

Random data (the input pipeline is measured separately), the real jitted step of the trainer,
after a compile/warm-up step. Prints a table; figures go to BENCHMARKS.md with the machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from simclr_jax import optim, parallel, train  # noqa: E402
from simclr_jax.config_base import load_config_file  # noqa: E402

# name -> (config file, preset, overrides)
CASES = {
    "quickstart": ("quickstart.py", None, {}),
    "r18_32px": ("simclr_v1.py", "cifar10", {"batch_size": 256}),
    "moco_v2_r18_32px": ("moco_v2.py", "cifar10", {"batch_size": 256}),
    "moco_v3_r18_32px": ("moco_v3.py", "cifar10", {"batch_size": 256}),
    "byol_r18_32px": ("byol.py", "cifar10", {"batch_size": 256}),
    "r50_224px": ("simclr_v1.py", "imagenet", {"batch_size": 128}),
}


def load(case):
    file, preset, overrides = CASES[case]
    c = load_config_file(os.path.join(ROOT, "configs", file), preset)
    c.unlock()
    for k, v in overrides.items():
        c[k] = v
    if c.method == "moco":
        c.moco.queue_size = max(c.batch_size, (c.moco.queue_size // c.batch_size) * c.batch_size)
    c.lock()
    return c


def compile_step(step_fn, state, batch):
    """(compiled step, compile seconds, XLA's FLOP count per step or None)."""
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    seconds = time.perf_counter() - t0
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", 0.0)) or None
    except Exception:  # cost analysis is best-effort on some backends
        flops = None
    return compiled, seconds, flops


def measure(case: str, steps: int) -> dict:
    config = load(case)
    mesh = parallel.make_mesh()
    schedule = optim.make_lr_schedule("cosine", peak_lr=0.1, total_steps=1000, warmup_steps=10,
                                      boundaries=(), steps_per_epoch=100)
    _, _, _, state, step, _ = train.build_step(config, mesh, schedule, 1000)
    B, S = config.batch_size, config.dataset.image_size
    rng = np.random.default_rng(0)
    batch = parallel.to_global(mesh, {
        "view1": rng.uniform(size=(B, S, S, 3)).astype(np.float32),
        "view2": rng.uniform(size=(B, S, S, 3)).astype(np.float32),
        "label": rng.integers(0, 10, size=(B,)).astype(np.int32)})
    step, compile_s, flops = compile_step(step, state, batch)
    state, m = step(state, batch)          # warm-up
    jax.block_until_ready(m["loss"])
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    dt = (time.perf_counter() - t0) / steps
    return {"case": case, "method": config.method, "model": f"R{config.model.depth}x"
            f"{config.model.width:g}" if config.model.name == "resnet" else config.model.name,
            "batch": B, "px": S, "step_s": dt, "img_s": B / dt,
            "img_s_dev": B / dt / jax.device_count(), "compile_s": compile_s,
            "tflops": (flops / dt / 1e12) if flops else float("nan")}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default="quickstart,r18_32px")
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    print(f"# {platform.node()} | {jax.devices()[0].device_kind} x{jax.device_count()} | "
          f"jax {jax.__version__} | cpus {os.cpu_count()}")
    print("| case | method | model | batch | px | s/step | img/s | img/s/device | TFLOP/s | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in a.cases.split(","):
        r = measure(case, a.steps)
        print(f"| {r['case']} | {r['method']} | {r['model']} | {r['batch']} | {r['px']} | "
              f"{r['step_s']:.3f} | {r['img_s']:.1f} | {r['img_s_dev']:.1f} | "
              f"{r['tflops']:.3f} | {r['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
