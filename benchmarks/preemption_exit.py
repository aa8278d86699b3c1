"""Seconds from SIGTERM to the committed checkpoint and to the exit of every process, for 1 or 2
local processes of the tiny quickstart (the README's preemption paragraph).

    python benchmarks/preemption_exit.py --processes 2 --runs 2

Each run starts the CLI (`configs/quickstart.py`, 300 steps at batch 32, ResNet-18 x1/8, one
CPU device per process), waits until process 0 logged `--after` steps, sends SIGTERM to the
last process only and times the new checkpoint directory and each exit (status 3 expected).
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ARGS = ["--config", os.path.join(ROOT, "configs", "quickstart.py"), "--config.num_steps=300",
        "--config.batch_size=32", "--config.model.width=0.125",
        "--config.dataset.knn_train_split=", "--config.checkpoint_every_steps=1000",
        "--config.log_every_steps=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged_steps(path: str) -> int:
    with open(path) as f:
        return len(re.findall(r"\] \[(\d+)\] .*\bloss=", f.read()))


def one_run(processes: int, after: int, root: str) -> dict:
    workdir = os.path.join(root, "run")
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    port = free_port()
    logs, procs = [], []
    for i in range(processes):
        cmd = [sys.executable, "-m", "simclr_jax.main", *ARGS, "--workdir", workdir]
        if processes > 1:
            cmd += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                    f"--process_id={i}"]
        logs.append(os.path.join(root, f"p{i}.log"))
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    deadline = time.time() + 600
    while logged_steps(logs[0]) < after:
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit(open(logs[0]).read()[-3000:])
        time.sleep(0.02)
    ckpts = os.path.join(workdir, "checkpoints")
    t0 = time.time()
    procs[-1].send_signal(signal.SIGTERM)
    committed, exits = None, [None] * processes
    while any(e is None for e in exits):
        if committed is None and os.path.isdir(ckpts) and any(
                d.isdigit() for d in os.listdir(ckpts)):
            committed = time.time() - t0
        for i, p in enumerate(procs):
            if exits[i] is None and p.poll() is not None:
                exits[i] = time.time() - t0
        time.sleep(0.01)
    return {"committed_s": committed, "exit_s": exits,
            "status": [p.returncode for p in procs]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=2, choices=(1, 2))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--after", type=int, default=5, help="steps logged before SIGTERM")
    a = parser.parse_args()
    print("| processes | run | signal -> checkpoint (s) | signal -> exit, each process (s) "
          "| status |\n|---|---|---|---|---|")
    for run in range(a.runs):
        with tempfile.TemporaryDirectory() as root:
            r = one_run(a.processes, a.after, root)
        committed = f"{r['committed_s']:.1f}" if r["committed_s"] is not None else "none"
        print(f"| {a.processes} | {run + 1} | {committed} | "
              f"{', '.join(f'{e:.1f}' for e in r['exit_s'])} | {r['status']} |", flush=True)


if __name__ == "__main__":
    main()
