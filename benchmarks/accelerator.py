"""One command on a GPU or TPU host: train-step speed, MFU, memory and input wait.

    python benchmarks/accelerator.py                      # the full table (GPU/TPU host)
    python benchmarks/accelerator.py --memory-only        # compile only: memory_analysis()
    python benchmarks/accelerator.py --smoke              # tiny sizes, runs anywhere (CPU)

For each case (SimCLR ResNet-50 224 px float32 and bf16, MoCo v2, MoCo v3 ResNet-50 and ViT-S,
BYOL; the ImageNet presets, aug.on_device) it prints:
- img/s/device of the real jitted train step (state donated) on a random uint8 batch, after
  compile and warm-up; each image is two views, like the references count;
- MFU: XLA's FLOP count of the compiled step / step time / the chip's peak (bf16 dense peak of
  the device kind, table below; "-" if unknown);
- memory: `compiled.memory_analysis()` (arguments, outputs, temporaries, and how much of the
  output aliases the donated input: with donation the state exists once);
- compile: seconds to lower and compile the step;
- input wait: the fraction of wall time the training loop spends in `next(batches)` when the
  real host pipeline (`pretrain_batches` over 300 in-memory 500x375 JPEGs, all host cores)
  feeds the step; and the host pipeline's images/s on ONE core of this machine
  (benchmarks/pipeline_throughput.py, run pinned with taskset). Both need TensorFlow (the
  tf.data pipeline): where it does not import (the lent accelerator) they print "-" / a note.

--deadline-s: no new case starts after that many seconds (their rows say so), for a time-boxed
call on a lent machine; --json writes the rows too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from simclr_jax import optim, parallel, train  # noqa: E402
from simclr_jax.config_base import load_config_file  # noqa: E402

# Dense bf16 peak FLOP/s per device, by jax's device_kind (vendor data sheets).
PEAK_BF16 = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
             "NVIDIA H100 PCIe": 756e12, "NVIDIA A100-SXM4-80GB": 312e12,
             "NVIDIA A100-SXM4-40GB": 312e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
             "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}

# name -> (config file, preset, overrides)
# In priority order: a time-boxed run (--deadline-s) drops the last ones first.
CASES = {
    "simclr_r50_bf16": ("simclr_v1.py", "imagenet", {"model.dtype": "bfloat16"}),
    "simclr_r50_f32": ("simclr_v1.py", "imagenet", {"model.dtype": "float32"}),
    "moco_v2_r50_bf16": ("moco_v2.py", "imagenet_200ep", {"model.dtype": "bfloat16"}),
    "moco_v3_r50_bf16": ("moco_v3.py", "r50_100ep", {"model.dtype": "bfloat16"}),
    "moco_v3_vit_s_bf16": ("moco_v3.py", "vit_small", {"model.dtype": "bfloat16"}),
    "byol_r50_bf16": ("byol.py", "imagenet_300ep", {"model.dtype": "bfloat16"}),
}
SMOKE = {"model.depth": 10, "model.width": 0.125, "head.hidden_dim": 64,
         "predictor.hidden_dim": 64, "dataset.image_size": 32, "model.variant": "tiny_test",
         "model.patch_size": 8}


def load(case: str, per_device_batch: int, smoke: bool, on_device: bool):
    file, preset, overrides = CASES[case]
    c = load_config_file(os.path.join(ROOT, "configs", file), preset)
    c.unlock()
    for key, value in {**overrides, **(SMOKE if smoke else {})}.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    c.batch_size = per_device_batch * jax.device_count()
    if smoke and c.model.get("bn_group_size"):
        c.model.bn_group_size = 4
    if c.method == "moco":
        c.moco.queue_size = max(c.batch_size, c.moco.queue_size // c.batch_size * c.batch_size)
    c.aug.on_device = on_device
    c.lock()
    return c


def build(config, mesh):
    schedule = optim.make_lr_schedule("cosine", peak_lr=0.1, total_steps=10_000,
                                      warmup_steps=10, boundaries=(), steps_per_epoch=100)
    _, _, _, state, step, _ = train.build_step(config, mesh, schedule, 10_000,
                                               num_classes=1000, num_train_examples=1_281_167)
    return state, step


def random_batch(config, mesh):
    B, S = config.batch_size, config.dataset.image_size
    rng = np.random.default_rng(0)
    dtype = np.uint8 if config.aug.on_device else np.float32
    view = lambda: (rng.integers(0, 256, (B, S, S, 3)).astype(dtype) if dtype == np.uint8
                    else rng.uniform(size=(B, S, S, 3)).astype(dtype))
    return parallel.to_global(mesh, {"view1": view(), "view2": view(),
                                     "label": rng.integers(0, 1000, (B,)).astype(np.int32)})


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def compile_case(step, state, batch):
    compiled = step.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", 0.0)) or None
    mem = compiled.memory_analysis()
    return compiled, flops, mem


def memory_row(mem, state) -> dict:
    gib = lambda b: b / 2 ** 30
    out = {"state_gib": gib(nbytes(state))}
    if mem is None:
        return out
    arg, res = mem.argument_size_in_bytes, mem.output_size_in_bytes
    alias, temp = mem.alias_size_in_bytes, mem.temp_size_in_bytes
    out.update(arg_gib=gib(arg), out_gib=gib(res), alias_gib=gib(alias), temp_gib=gib(temp),
               peak_gib=gib(arg + res - alias + temp))
    return out


def time_steps(compiled, state, batch, steps: int):
    state, m = compiled(state, batch)                     # warm-up
    jax.block_until_ready(m["loss"])
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, batch)
    jax.block_until_ready(m["loss"])
    return (time.perf_counter() - t0) / steps, state


def input_wait(compiled, state, config, mesh, steps: int, smoke: bool) -> float:
    """Fraction of loop wall time spent waiting in next(batches) with the real pipeline."""
    from pipeline_throughput import cifar_files, encoded_source, large_jpegs, synthetic_jpegs
    from simclr_jax.data import pipeline

    if os.path.isdir("/work/shared/data/cifar10-train") and not smoke:
        encoded = large_jpegs(cifar_files("/work/shared/data/cifar10-train", 300))
    else:
        encoded = synthetic_jpegs(64 if smoke else 300)
    source = encoded_source(encoded, (None, None, 3))
    batches = pipeline.pretrain_batches(source, config.aug, global_batch_size=config.batch_size,
                                        image_size=config.dataset.image_size, seed=0, mesh=mesh)
    for _ in range(3):
        state, m = compiled(state, next(batches))
    jax.block_until_ready(m["loss"])
    waited, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        w0 = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - w0
        state, m = compiled(state, batch)
    jax.block_until_ready(m["loss"])
    return waited / (time.perf_counter() - t0)


def host_rate_one_core(smoke: bool) -> str:
    """images/s of the host pipeline on one core (aug.on_device rows), via taskset."""
    if shutil.which("taskset") is None:
        return "(taskset missing)"
    cmd = ["taskset", "-c", "0", sys.executable, os.path.join(ROOT, "benchmarks",
                                                             "pipeline_throughput.py"),
           "--sizes", "32" if smoke else "224", "--rounds", "1" if smoke else "3",
           "--seconds", "1" if smoke else "4", "--only", "on_device"]
    if smoke:
        cmd.append("--synthetic")
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                                                                   "JAX_PLATFORMS": "cpu"})
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "px" in line]
    return "\n".join(rows) if rows else out.stderr[-2000:]


def tf_available() -> bool:
    from simclr_jax.data import tf_support
    return tf_support.available()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--per-device-batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--memory-only", action="store_true", help="compile and report memory only")
    p.add_argument("--host-aug", action="store_true", help="augment on the host (not on device)")
    p.add_argument("--smoke", action="store_true", help="tiny model and images (any machine)")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="start no case after this many seconds")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    a = p.parse_args()
    start = time.time()
    with_tf = tf_available()
    if a.smoke:
        a.per_device_batch, a.steps = min(a.per_device_batch, 8), min(a.steps, 2)
    mesh = parallel.make_mesh()
    kind = jax.devices()[0].device_kind
    peak = PEAK_BF16.get(kind)
    print(f"# {platform.node()} | {kind} x{jax.device_count()} | jax {jax.__version__} | "
          f"host cores {os.cpu_count()} | per-device batch {a.per_device_batch} | "
          f"aug on device: {not a.host_aug}" + ("" if with_tf else
                                                " | no TensorFlow: no input-wait column"))
    print("| case | img/s/device | step ms | TFLOP/step | MFU | compile s | state GiB | args GiB | "
          "out GiB | aliased GiB | temp GiB | peak GiB | input wait |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for case in a.cases.split(","):
        if a.deadline_s is not None and time.time() - start > a.deadline_s:
            print(f"| {case} | not run: past the {a.deadline_s:.0f} s deadline |", flush=True)
            rows.append({"case": case, "skipped": "deadline"})
            continue
        config = load(case, a.per_device_batch, a.smoke, on_device=not a.host_aug)
        state, step = build(config, mesh)
        batch = random_batch(config, mesh)
        t0 = time.perf_counter()
        compiled, flops, mem = compile_case(step, state, batch)
        compile_s = time.perf_counter() - t0
        m = memory_row(mem, state)
        mem_cols = " | ".join(f"{m[k]:.2f}" if k in m else "-" for k in
                              ("state_gib", "arg_gib", "out_gib", "alias_gib", "temp_gib",
                               "peak_gib"))
        tflop = f"{flops / 1e12:.2f}" if flops else "-"
        row = {"case": case, "tflop_per_step": flops and flops / 1e12, "compile_s": compile_s,
               **m}
        rows.append(row)
        if a.memory_only:
            print(f"| {case} | - | - | {tflop} | - | {compile_s:.0f} | {mem_cols} | - |",
                  flush=True)
            continue
        dt, state = time_steps(compiled, state, batch, a.steps)
        # The compiled module is the per-device (SPMD-partitioned) program: its FLOPs per device.
        mfu = f"{flops / dt / peak:.1%}" if flops and peak else "-"
        wait = (f"{input_wait(compiled, state, config, mesh, a.steps, a.smoke):.1%}"
                if with_tf else "-")
        ips = config.batch_size / dt / jax.device_count()
        row.update(img_per_s_per_device=ips, step_ms=dt * 1e3,
                   mfu=flops / dt / peak if flops and peak else None, input_wait=wait)
        print(f"| {case} | {ips:.0f} | {dt * 1e3:.1f} | {tflop} | {mfu} | {compile_s:.0f} | "
              f"{mem_cols} | {wait} |", flush=True)
        del state, compiled, step, batch
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": kind, "devices": jax.device_count(), "jax": jax.__version__,
                       "per_device_batch": a.per_device_batch, "rows": rows}, f, indent=1)
    if not a.memory_only and with_tf:
        print("\nHost pipeline, one core of this machine (images/s):")
        print(host_rate_one_core(a.smoke))


if __name__ == "__main__":
    main()
