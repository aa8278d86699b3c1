"""Everything we want from a short loan of an accelerator, in ONE time-boxed call (<= 9 min).

    bash benchmarks/device_run.sh            # on the lent machine (see the script for carry)
    bash benchmarks/device_run.sh --smoke    # the same steps, tiny, on any CPU (tests run it)

Needs no TensorFlow, clu or tensorflow-datasets (the lent host has none): jax, flax, optax,
orbax, numpy, pillow, scikit-learn, and ml_collections (carried as a 77 kB wheel in .whl/);
torch/torchvision for the reference. Each part is a subprocess with its own time limit, so one
failure or overrun costs only its part, and this process never imports JAX (the parts get
the whole accelerator one after another). Parts, written to --out and printed:
(a) benchmarks/accelerator.py: the table (img/s/device, MFU, memory_analysis, compile time)
    and benchmarks/torch_reference.py's SimCLR R50 on the same card, with the ratio;
(b) the MoCo v2 CIFAR-10 colab preset with dataset.on_device on benchmarks/data/
    cifar10_train_jpeg.npz (benchmarks/make_cifar_npz.py; 45,000 train / 5,000 held-out kNN
    test images), kNN after every epoch, stopped with SIGTERM when its time is up (the 200-epoch
    schedule is kept, so each epoch's kNN is comparable to the colab's run at that epoch);
(c) what did not run, and why.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CIFAR_NPZ = os.path.join(HERE, "data", "cifar10_train_jpeg.npz")
# The colab (facebookresearch/moco, colab/moco_cifar10_demo.ipynb; its README): kNN top-1 on the
# CIFAR-10 test set, asymmetric loss. Only these end points are published; no per-epoch values.
COLAB_PUBLISHED = {200: 82.6, 400: 86.3, 800: 88.7}
COLAB_EPOCH_S_V100 = 20     # its README: ~20 s per epoch on one V100 (FIDELITY.md)


class Report:
    def __init__(self, out: str):
        self.out, self.lines, self.missing = out, [], []

    def add(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def not_run(self, what: str, why: str) -> None:
        self.missing.append(f"- {what}: {why}")

    def write(self) -> None:
        self.add("\n## (c) What did not run, and why")
        for line in self.missing or ["- everything ran"]:
            self.add(line)
        with open(os.path.join(self.out, "device_run.md"), "w") as f:
            f.write("\n".join(self.lines) + "\n")


def run(cmd: list, timeout: float, log: str, env=None) -> tuple[int | None, str]:
    """(exit status or None on timeout, its output); the output also goes to `log`."""
    start = time.time()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                             env=env or os.environ.copy(), start_new_session=True)
        try:
            code = p.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            code = None
    with open(log) as f:
        text = f.read()
    print(f"[{os.path.basename(log)}: {'timeout' if code is None else f'exit {code}'} after "
          f"{time.time() - start:.0f} s]", flush=True)
    return code, text


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("|", "# "))]


# Time limits in seconds: (a) starts no case after ACCEL_DEADLINE and is killed at ACCEL_KILL,
# the torch reference at TORCH_KILL; (b) gets what is left of the budget. Smoke: generous
# (a shared CPU can be slow; the point there is that every part starts and ends).
LIMITS = {"real": {"budget": 510, "accel_deadline": 210, "accel_kill": 300, "torch_kill": 110},
          "smoke": {"budget": 1500, "accel_deadline": 600, "accel_kill": 700, "torch_kill": 300}}
SMOKE_CASES = "simclr_r50_bf16,moco_v3_vit_s_bf16"   # one ResNet, one ViT: the script works


def part_a(report: Report, a, limits: dict) -> None:
    report.add("## (a) Train-step throughput, MFU, memory, compile time")
    js = os.path.join(a.out, "accelerator.json")
    cmd = [sys.executable, os.path.join(HERE, "accelerator.py"), "--json", js,
           "--deadline-s", str(limits["accel_deadline"])]
    if a.smoke:
        cmd += ["--smoke", "--cases", SMOKE_CASES]
    code, text = run(cmd, limits["accel_kill"], os.path.join(a.out, "accelerator.log"))
    for line in table_lines(text):
        report.add(line)
    rows = {}
    if os.path.exists(js):
        with open(js) as f:
            rows = {r["case"]: r for r in json.load(f)["rows"]}
        for case, r in rows.items():
            if r.get("skipped"):
                report.not_run(f"accelerator case {case}", "past its time budget")
    if code != 0:
        report.not_run("accelerator.py (some cases)", "timed out" if code is None else
                       f"exit {code}: {text.strip().splitlines()[-1] if text.strip() else ''}")

    report.add("\n### PyTorch reference on the same card (torchvision R50, bf16 autocast, "
               "channels_last, torch.compile)")
    torch_cmd = [sys.executable, os.path.join(HERE, "torch_reference.py")]
    code, text = run(torch_cmd + (["--smoke"] if a.smoke else []), limits["torch_kill"],
                     os.path.join(a.out, "torch_reference.log"))
    if code != 0:
        report.not_run("PyTorch reference", "timed out (torch.compile)" if code is None else
                       f"exit {code}: {text.strip().splitlines()[-1:] if text.strip() else ''}")
    torch_rows = [line for line in table_lines(text) if "torch" in line]
    for line in table_lines(text):
        report.add(line)
    jax_row = rows.get("simclr_r50_bf16", {})
    torch_ips = float(torch_rows[-1].strip().strip("|").split("|")[-1]) if torch_rows else 0.0
    if torch_ips > 0 and jax_row.get("img_per_s_per_device"):
        report.add(f"\nSimCLR {'R50' if not a.smoke else '(smoke: not the same model)'} bf16, "
                   f"JAX / PyTorch on this card: "
                   f"{jax_row['img_per_s_per_device']:.0f} / {torch_ips:.0f} = "
                   f"{jax_row['img_per_s_per_device'] / torch_ips:.2f}x "
                   f"(goals: >= 2,900 img/s, >= 1.3x)")
    else:
        report.not_run("JAX / PyTorch ratio", "one of the two SimCLR R50 bf16 rows is missing")


def smoke_npz(path: str) -> None:
    """The digits as an npz of PNG files (the CIFAR archive's layout), for --smoke."""
    import io

    import numpy as np
    from PIL import Image

    from simclr_jax.data import embedded
    images, labels = embedded.digits_arrays()
    files = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        files.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in files])]).astype(np.int64)
    np.savez(path, encoded=np.concatenate(files), offsets=offsets, labels=labels)


def part_b(report: Report, a, budget_s: float) -> None:
    report.add("\n## (b) Learning run: MoCo v2 CIFAR-10 colab preset, dataset.on_device")
    workdir = os.path.join(a.work, "moco_colab")
    if a.smoke:     # the digits as PNGs, 40 per class to train (25 steps per epoch)
        npz, per_class, preset = os.path.join(a.work, "digits.npz"), 40, "cifar10_colab,runlocal"
        smoke_npz(npz)
        steps_per_epoch = (10 * per_class) // 16
    else:
        npz, per_class, preset = CIFAR_NPZ, 4500, "cifar10_colab"
        steps_per_epoch = (10 * per_class) // 512
        if not os.path.exists(npz):
            report.not_run("learning run", f"{npz} is missing: run benchmarks/make_cifar_npz.py "
                                           f"and carry benchmarks/data")
            return
    split = f"train[:{per_class}]"
    cmd = [sys.executable, "-m", "simclr_jax.main",
           f"--config={os.path.join(ROOT, 'configs', 'moco_v2.py')}:{preset}",
           f"--workdir={workdir}", f"--config.dataset.name=npz:{npz}",
           f"--config.dataset.train_split={split}", f"--config.dataset.knn_train_split={split}",
           f"--config.dataset.knn_test_split=train[{per_class}:]",
           "--config.dataset.on_device=true", f"--config.eval.every_steps={steps_per_epoch}",
           "--config.log_images=false", "--config.checkpoint_every_steps=1000000"]
    if a.smoke:
        cmd += ["--config.num_steps=1000", "--config.eval.batch_size=64"]
    log = os.path.join(a.out, "learning_run.log")
    start = time.time()
    metrics = os.path.join(workdir, "metrics.jsonl")
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        stop_after = 2 if a.smoke else None          # kNN evaluations, then SIGTERM
        while p.poll() is None and time.time() - start < budget_s:
            time.sleep(1)
            if stop_after and len(knn_rows(metrics)) >= stop_after:
                break
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)          # checkpoint at the next step, exit 3
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    code = p.wait()
    rows = knn_rows(metrics)
    report.add(f"{len(rows)} epochs of {steps_per_epoch} steps at batch "
               f"{16 if a.smoke else 512} in {time.time() - start:.0f} s (compile and start "
               f"included; exit {code}: 3 = stopped by SIGTERM as planned)")
    rates = [r["images_per_sec_per_device"] for r in read_jsonl(metrics)
             if "images_per_sec_per_device" in r]
    if rates:
        report.add(f"training img/s/device (after the first log): "
                   f"{(sum(rates[1:]) / max(len(rates) - 1, 1)) if len(rates) > 1 else rates[0]:.0f}")
    report.add(f"\n| epoch | step | kNN top-1 (ours, {10 * (500 if not a.smoke else 0) or 'the'} "
               f"held-out train images) | colab, published (CIFAR-10 test) |")
    report.add("|---|---|---|---|")
    for r in rows:
        epoch = r["step"] // steps_per_epoch
        report.add(f"| {epoch} | {r['step']} | {100 * r['knn_top1']:.1f} | "
                   f"{COLAB_PUBLISHED.get(epoch, '-')} |")
    report.add(f"| 200 | - | - | {COLAB_PUBLISHED[200]} (one V100, ~{COLAB_EPOCH_S_V100} s/epoch) |")
    report.add("The colab publishes only its end points (82.6 / 86.3 / 88.7 at 200 / 400 / 800 "
               "epochs), not a per-epoch curve; ours keeps its 200-epoch schedule, so a later "
               "run of all 200 epochs is directly comparable.")
    if code not in (0, 3):
        report.not_run("learning run", f"exit {code}, see learning_run.log: "
                       f"{open(log).read().strip().splitlines()[-1:]}")
    if not rows:
        report.not_run("learning-run kNN", "no epoch finished within its time")


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def knn_rows(path: str) -> list[dict]:
    return [r for r in read_jsonl(path) if "knn_top1" in r]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--smoke", action="store_true", help="tiny, on any CPU")
    p.add_argument("--out", default=os.environ.get("OUT") or "/tmp/device_run")
    p.add_argument("--budget-s", type=float, default=None,
                   help="the whole run (default 510 s; smoke 1500 s)")
    p.add_argument("--parts", default="a,b", help="a: throughput table + torch; b: learning "
                   "run (e.g. --parts b for a second call that only learns)")
    a = p.parse_args()
    limits = LIMITS["smoke" if a.smoke else "real"]
    budget = a.budget_s or limits["budget"]
    parts = set(a.parts.split(","))
    os.makedirs(a.out, exist_ok=True)
    a.work = os.path.join("/tmp", f"device_run_work_{os.getpid()}")
    os.makedirs(a.work, exist_ok=True)
    start = time.time()
    report = Report(a.out)
    report.add(f"# device_run {'(smoke, CPU sizes) ' if a.smoke else ''}"
               f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    try:
        gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        report.add(gpu.stdout.strip() or "nvidia-smi: no GPU listed")
    except (OSError, subprocess.TimeoutExpired):
        report.add("nvidia-smi: not available")
    if "a" in parts:
        part_a(report, a, limits)
    else:
        report.not_run("(a) throughput table and PyTorch reference", "--parts left it out")
    left = budget - (time.time() - start)
    if "b" not in parts:
        report.not_run("(b) learning run", "--parts left it out")
    elif left > 60:
        part_b(report, a, left - 30)
    else:
        report.not_run("(b) learning run", f"only {left:.0f} s of the budget were left")
    report.add(f"\ntotal {time.time() - start:.0f} s")
    report.write()


if __name__ == "__main__":
    main()
