"""Several processes train exactly like one: 2 local processes x 2 CPU devices, joined with
jax.distributed over 127.0.0.1 (gloo collectives, JAX's CPU default), against 1 process x 4
devices running the same jobs. Jobs run through main.run_mode (what the CLI calls), several per
interpreter; the CLI itself (flags, cluster join, exit codes) in the SIGTERM and kill -9 tests.

Tolerance: the two topologies run the same programs on the same global batches; only the order
of float32 reductions across devices differs (gloo's cross-process all-reduce vs the in-process
one), i.e. a few ulps per step, amplified by a few optimiser steps. We allow 1e-4 relative on
losses/metrics and 1e-4 * (1 + |p|) on parameters; feeding a different global batch (as before
this file existed: each process drew its own share) changes the step-2 loss by ~1e-1 and
parameters by ~1e-3 or more, far outside it.

Every process runs under a timeout, so a hang fails the test instead of blocking the suite.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import jax
import numpy as np
import pytest
from tiny_configs import ROOT

from simclr_jax import checkpoint

PYTHON = sys.executable
CONFIG = os.path.join(ROOT, "tests", "multiprocess_config.py")
TIMEOUT_S = 300           # per process: a hang fails instead of blocking the suite
JOB_TIMEOUT_S = 150       # and per job more in a process that runs several
HEARTBEAT_S = 10          # dead-peer detection in the kill -9 test
COMPILE_CACHE = os.path.join(tempfile.gettempdir(), f"simclr_jax_mp_cache_{os.getpid()}")
LOSS_RTOL = 1e-4
LOSS_ATOL = 1e-5   # SimSiam's loss (a cosine in [-1, 1]) can be ~1e-3 after a few steps
PARAM_TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _remove_compile_cache():
    yield
    shutil.rmtree(COMPILE_CACHE, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(devices: int) -> dict:
    """The test's env without its 8-device XLA flag: `devices` virtual CPU devices.

    Compile time dominates: runs of a program compiled before (the SIGTERM and kill -9 tests
    run the first SimCLR run's programs) load it from JAX's persistent cache.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                        "--xla_backend_optimization_level=0")
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT,
               JAX_COMPILATION_CACHE_DIR=COMPILE_CACHE,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    return env


class TwoProcesses:
    """`python -m <module> ... --coordinator_address ... --process_id i` for i in 0, 1, or with
    `code`: `python -c <code> <args> '["127.0.0.1:<port>", i]'` (the JOBS runner)."""

    def __init__(self, module: str | None, args: list, logdir, name: str, code: str = None):
        port = free_port()
        self.logs = [os.path.join(str(logdir), f"{name}.p{i}.log") for i in (0, 1)]
        self.procs = []
        for i in (0, 1):
            if code is not None:
                cmd = [PYTHON, "-c", code, *args, json.dumps([f"127.0.0.1:{port}", i])]
                env = jobs_env(2)
            else:
                cmd = [PYTHON, "-m", module, *args, f"--coordinator_address=127.0.0.1:{port}",
                       "--num_processes=2", f"--process_id={i}"]
                if module == "simclr_jax.main":
                    cmd.append(f"--heartbeat_timeout_s={HEARTBEAT_S}")
                env = child_env(2)
            with open(self.logs[i], "w") as log:
                self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                                   stderr=subprocess.STDOUT))

    def log(self, i: int) -> str:
        with open(self.logs[i]) as f:
            return f.read()

    def wait(self, timeout=TIMEOUT_S) -> list:
        deadline = time.time() + timeout
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
            except subprocess.TimeoutExpired:
                for q in self.procs:
                    q.kill()
                pytest.fail(f"timed out after {timeout} s:\n" + self.log(0)[-3000:])
        return codes

    def wait_ok(self, timeout=TIMEOUT_S):
        codes = self.wait(timeout)
        assert codes == [0, 0], f"exit codes {codes}:\n{self.log(0)[-3000:]}\n{self.log(1)[-3000:]}"


def main_args(config_arg: str, workdir, *overrides) -> list:
    return [f"--config={CONFIG}:{config_arg}", f"--workdir={workdir}", *overrides]


JOBS = textwrap.dedent("""
    import json, sys
    import jax
    from simclr_jax import distributed
    jobs, cluster = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    if cluster:                    # [coordinator, process id]: 2 processes x 2 devices
        distributed.join("on", distributed.resolve_settings(cluster[0], 2, cluster[1]),
                         heartbeat_timeout_s=30)
        assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    else:
        assert jax.process_count() == 1 and jax.device_count() == 4, jax.devices()
    from multiprocess_config import get_config
    from simclr_jax import main, export
    for config_arg, workdir, overrides in jobs:
        if config_arg == "export":
            export.export_encoder(workdir, overrides["out"])
            continue
        config = get_config(config_arg)
        config.unlock()
        for key, value in overrides.items():
            *path, last = key.split(".")
            node = config
            for name in path:
                node = node[name]
            node[last] = value
        main.run_mode(config, workdir)
""")


def jobs_env(devices: int) -> dict:
    env = child_env(devices)
    env["PYTHONPATH"] = ROOT + os.pathsep + os.path.join(ROOT, "tests")
    return env


def run_reference(jobs: list, logdir):
    """The same jobs in ONE process with 4 devices (one interpreter start for all of them)."""
    with open(os.path.join(str(logdir), "reference.log"), "w") as log:
        r = subprocess.run([PYTHON, "-c", JOBS, json.dumps(jobs), "null"], cwd=ROOT,
                           env=jobs_env(4), stdout=log, stderr=subprocess.STDOUT,
                           timeout=TIMEOUT_S + JOB_TIMEOUT_S * len(jobs))
    with open(log.name) as f:
        assert r.returncode == 0, f.read()[-3000:]


def run_two_processes(jobs: list, logdir, name: str):
    """The jobs in 2 processes x 2 devices that join once and run them one after the other
    (as the CLI would, through main.run_mode): one interpreter start and one cluster join for
    all of them instead of one per job."""
    TwoProcesses(None, [json.dumps(jobs)], logdir, name, code=JOBS).wait_ok(
        TIMEOUT_S + JOB_TIMEOUT_S * len(jobs))


def read_json(workdir, name):
    with open(os.path.join(str(workdir), name)) as f:
        return json.load(f)


def assert_close_metrics(got: dict, want: dict, keys, num_examples: int | None = None):
    """Losses within LOSS_RTOL; accuracies (with `num_examples`) may differ by one example: a
    near-tied neighbour or logit can flip under a different float reduction order."""
    for k in keys:
        assert k in got and k in want, (k, got, want)
        if num_examples:
            assert abs(got[k] - want[k]) <= 1.0 / num_examples + 1e-9, (k, got[k], want[k])
        else:
            np.testing.assert_allclose(got[k], want[k], rtol=LOSS_RTOL, atol=LOSS_ATOL, err_msg=k)


def assert_close_trees(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape
        assert np.all(np.abs(x - y) <= PARAM_TOL * (1 + np.abs(y))), np.max(np.abs(x - y))


def final_arrays(workdir):
    arrays = checkpoint.restore_arrays(str(workdir))
    return {k: arrays[k] for k in ("params", "batch_stats") if k in arrays}


# ----------------------------------------------------------------------------- SimCLR + protocols

@pytest.fixture(scope="module")
def simclr_runs(tmp_path_factory):
    """SimCLR pretraining, then kNN, linear eval, fine-tuning -> distillation and export of its
    encoder: each job once as 2 processes x 2 devices and once in 1 process x 4 devices (each
    topology runs all jobs in one interpreter, through main.run_mode as the CLI does; the CLI's
    own flags and cluster join run in the SIGTERM and kill -9 tests below)."""
    root = tmp_path_factory.mktemp("multiprocess")
    two, one = root / "two", root / "one"
    times = {}

    def jobs(base):
        pre = str(base / "pretrain")
        return [   # the view-pairs image on; kNN in the knn_eval job (the same evaluator)
            ("quickstart.py", pre, {"log_images": True, "dataset.knn_train_split": ""}),
            ("knn_eval.py", str(base / "knn"),
             {"init_from": pre, "dataset.knn_train_split": "train"}),
            ("linear_eval.py+simclr", str(base / "linear"), {"init_from": pre}),
            ("finetune.py+cifar10_10pct", str(base / "finetune"), {"init_from": pre}),
            ("distill.py+cifar10", str(base / "distill"),
             {"teacher_from": str(base / "finetune")}),
        ]

    start = time.time()
    run_two_processes(jobs(two) + [("export", str(two / "pretrain"), {"out": str(two / "exported")})],
                      root, "simclr")
    times["2 processes (all jobs)"] = time.time() - start
    start = time.time()
    run_reference(jobs(one) + [("export", str(one / "pretrain"), {"out": str(one / "exported")})],
                  root)
    times["reference (all jobs, 1 process)"] = time.time() - start
    print("multi-process job times (s):", {k: round(v, 1) for k, v in times.items()})
    return two, one


# What is exactly equal across topologies is the data (tests/test_pipeline_topology.py: the
# same global batch bytes); the numerics of each step agree up to float reduction order. Measured
# here: per-step losses within 2e-7 relative over 3 steps. Long runs drift apart (issue 22: after
# 30 steps the final loss was 8.130 vs 8.466), so only the first steps are held to this bound.
PER_STEP_LOSS_RTOL = 1e-5


def test_simclr_pretraining_two_processes_equal_one(simclr_runs):
    from tb_events import scalar_series
    two, one = simclr_runs
    got, want = (read_json(d / "pretrain", "final_metrics.json") for d in (two, one))
    assert got["step"] == want["step"] == 3
    assert_close_metrics(got, want, ["loss", "total_loss"])
    assert_close_trees(final_arrays(two / "pretrain"), final_arrays(one / "pretrain"))
    # Every step's loss (logged each step), not only the last one.
    got, want = (scalar_series(d / "pretrain", "loss") for d in (two, one))
    assert sorted(got) == sorted(want) == [1, 2, 3], (got, want)
    worst = max(abs(got[k] - want[k]) / abs(want[k]) for k in want)
    print(f"per-step loss, 2 processes vs 1: max relative difference {worst:.2e}")
    assert worst <= PER_STEP_LOSS_RTOL, (got, want)


def test_evaluation_protocols_two_processes_equal_one(simclr_runs):
    two, one = simclr_runs
    got, want = (read_json(d / "knn", "knn_eval.json") for d in (two, one))
    assert got["num_bank_examples"] == want["num_bank_examples"] > 0
    assert_close_metrics(got, want, ["knn_top1", "knn_top5"], got["num_test_examples"])
    for mode, results in (("linear", "linear_eval.json"), ("finetune", "finetune.json"),
                          ("distill", "distill.json")):
        got, want = (read_json(d / mode, results) for d in (two, one))
        assert got["num_eval_examples"] == want["num_eval_examples"] > 0
        assert_close_metrics(got, want, ["train_loss"])
        assert_close_metrics(got, want, ["top1"], got["num_eval_examples"])
        assert_close_trees(final_arrays(two / mode), final_arrays(one / mode))


def test_export_two_processes_one_writer(simclr_runs):
    from simclr_jax.export import load_encoder
    two, one = simclr_runs
    got, want = load_encoder(str(two / "exported")), load_encoder(str(one / "exported"))
    assert got.model_config == want.model_config
    assert_close_trees(got.variables, want.variables)
    # The two-process export equals the encoder of the two-process workdir.
    assert_close_trees(got.variables, load_encoder(str(two / "pretrain")).variables)


# ----------------------------------------------------------------------------- other methods

def colour_images(tmp_path, n=200, size=16) -> str:
    """An npz dataset of random colour images: CMC's ab view of the grey digits is Lab's tiny
    grey offset (|a|, |b| < 0.005) on a constant, whose first BN amplifies the last-bit
    differences of cross-process reductions to 1e-3 (measured: Z_ab 3e-4 apart at step 1)."""
    rng = np.random.default_rng(0)
    path = str(tmp_path / "colour.npz")
    np.savez(path, images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
             labels=np.arange(n) % 10)
    return path


@pytest.fixture(scope="module")
def every_method(tmp_path_factory):
    """Each method's cifar10 recipe (shrunk: 3 steps) on 2 processes x 2 devices and on 1 x 4,
    all of them in one pair of processes and once more in one 4-device process."""
    root = tmp_path_factory.mktemp("every_method")
    # InvaSpread at a tenth of its preset's LR: at 0.03 this tiny net is chaotic. On an
    # AVX512-FP16 Xeon, step-2 losses agreed to 5e-7 but step-2 gradient norms differed by 0.2%
    # and step-3 losses by 0.4% (rounding alone); at 0.003 every step agrees to 2e-6.
    # CMC on colour images: see colour_images.
    # Left out for the suite's time (measured equal, each ~60 s of the suite): MoCo v3 and
    # BYOL (the EMA target of MoCo v2 and DINO below; their 8-device = 1-device steps in
    # tests/test_train_step_parity.py), SimSiam (no state or term across examples besides BN,
    # which SimCLR's case covers) and InvaSpread (negatives from the global batch, as SimCLR's
    # NT-Xent; at base_lr 0.003) and InstDisc (a bank of the training split read and written by
    # example index, sharded over the devices: CMC's two banks below are the same MemoryBank; its
    # 8-device = 1-device step in tests/test_instdisc.py). Add "moco_v3.py+cifar10": {},
    # "byol.py+cifar10": {}, "simsiam.py+cifar10": {}, "instdisc.py+cifar10": {},
    # "invaspread.py+cifar10": {"optimizer.base_lr": 0.003} to run them.
    methods = {"moco_v2.py+cifar10": {},
               "cmc.py+cifar10": {"dataset.name": f"npz:{colour_images(root)}"},
               "swav.py+cifar10": {}, "cpc_v2.py+cifar10": {}, "dino.py+cifar10": {}}
    methods = {arg: {**NO_KNN, **overrides} for arg, overrides in methods.items()}
    times = {}
    start = time.time()
    run_two_processes([(arg, str(root / "two" / arg), o) for arg, o in methods.items()], root,
                      "every_method")
    times[f"2 processes (all {len(methods)})"] = time.time() - start
    start = time.time()
    run_reference([(arg, str(root / "one" / arg), o) for arg, o in methods.items()], root)
    times[f"reference (all {len(methods)}, 1 process)"] = time.time() - start
    print("multi-process job times (s):", {k: round(v, 1) for k, v in times.items()})
    return root, methods


NO_KNN = {"dataset.knn_train_split": ""}


def test_every_method_pretraining_two_processes_equal_one(every_method):
    """MoCo v2 (queue + shuffle BN + momentum target), CMC (two memory banks of the training
    split, their rows sharded over the 4 devices, read and written by example index, and its
    Z estimates), SwAV (multi-crop views of two sizes, Sinkhorn-Knopp
    over the global batch), CPC v2 (per-patch augmentation drawn for the global batch, InfoNCE
    over every patch of it) and DINO (a momentum teacher, a centre over the global batch, a
    frozen parameter group): the same losses and parameters (target networks, the queue, the
    banks and the centre included) on 2 x 2 as on 1 x 4."""
    root, methods = every_method
    for arg in methods:
        got, want = (read_json(root / d / arg, "final_metrics.json") for d in ("two", "one"))
        assert_close_metrics(got, want, ["loss"])
        got, want = (checkpoint.restore_arrays(str(root / d / arg)) for d in ("two", "one"))
        assert set(got) == set(want)
        for tree in (got, want):
            tree.pop("step"), tree.pop("opt_state")
        assert_close_trees(got, want)


# What a checkpoint must carry exactly besides networks and optimizer: multi-crop views of two
# sizes with SwAV's queue and prototype freeze; CMC's two memory banks (rows sharded over the
# devices) with their Z estimates. (SimCLR's run is killed at random moments in
# tests/test_reliability.py, InstDisc's bank in tests/test_instdisc.py.)
METHOD_STATE = {"swav.py+cifar10": ["queue"],
                "cmc.py+cifar10": ["memory_ab", "memory_l", "nce_z_ab", "nce_z_l"]}


@pytest.mark.parametrize("config_arg", sorted(METHOD_STATE))
def test_sigkill_during_a_save_then_resume_is_exact_with_method_state(every_method, tmp_path,
                                                                      config_arg):
    """The CLI (1 process x 4 devices) killed with SIGKILL while it writes a checkpoint, after
    an earlier one is committed, and run again: it resumes and ends with exactly (bit for bit)
    the state of the uninterrupted 1 x 4 run of the fixture, the method's state included. Its
    programs come from that run's compilation cache."""
    from test_reliability import _kill_when, assert_trees_equal
    root, methods = every_method
    workdir = tmp_path / "killed"
    ckpts = workdir / "checkpoints"
    flags = [f"--config.{k}={v}" for k, v in
             {**methods[config_arg], "checkpoint_every_steps": 1}.items()]
    command = [PYTHON, "-m", "simclr_jax.main", *main_args(config_arg, workdir, *flags)]
    env = child_env(4)

    def saving_after_a_save():     # so that the rerun resumes (from the committed one)
        names = os.listdir(ckpts) if ckpts.is_dir() else []
        return any(d.isdigit() for d in names) and any("tmp" in d for d in names)

    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert _kill_when(proc, saving_after_a_save, timeout=TIMEOUT_S), \
        "the run ended before a save was killed"
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=TIMEOUT_S)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Resumed from checkpoint" in final.stderr, final.stderr[-3000:]
    killed = checkpoint.restore_arrays(str(workdir))
    straight = checkpoint.restore_arrays(str(root / "one" / config_arg))
    assert int(killed["step"]) == int(straight["step"]) == 3
    assert sorted(killed["method_state"]) == METHOD_STATE[config_arg]
    assert set(killed) == set(straight)
    assert_trees_equal(killed, straight)


# ----------------------------------------------------------------------------- preemption

def wait_for(condition, timeout=TIMEOUT_S, what=""):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_sigterm_to_one_process_stops_both_at_the_same_step_and_resume_is_exact(
        simclr_runs, tmp_path):
    """SIGTERM to process 1 only: both processes save the same step s < 3 and exit with status 3.
    Resuming that checkpoint on the other topology (1 process x 4 devices) ends with the
    parameters of the uninterrupted 2-process run."""
    two, _ = simclr_runs
    workdir = tmp_path / "run"
    run = TwoProcesses("simclr_jax.main", main_args("quickstart.py", workdir,
                                                    "--config.dataset.knn_train_split="),
                       tmp_path, "stopped")
    wait_for(lambda: "Hyperparameters" in run.log(0) and "JAX process 1/2" in run.log(1),
             what="both processes to start")
    run.procs[1].send_signal(signal.SIGTERM)
    codes = run.wait()
    assert codes == [3, 3], (codes, run.log(0)[-3000:], run.log(1)[-3000:])
    # final_metrics.json belongs to finished runs only: the one checkpoint names the step.
    assert not (workdir / "final_metrics.json").exists()
    steps = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert len(steps) == 1 and 0 < steps[0] < 3, steps
    stopped = steps[0]
    assert (f"stopped at step {stopped} of 3; checkpoint saved; re-run the same command to "
            f"resume") in run.log(0)
    assert "finished" not in run.log(0)
    run_reference([("quickstart.py", str(workdir), {"dataset.knn_train_split": ""})], tmp_path)
    assert read_json(workdir, "final_metrics.json")["step"] == 3
    assert_close_trees(final_arrays(workdir), final_arrays(two / "pretrain"))


def test_kill_9_of_one_process_ends_the_other_with_a_clear_message(tmp_path):
    """The survivor exits (non-zero, naming the lost peer) in bounded time instead of hanging."""
    run = TwoProcesses("simclr_jax.main", main_args("quickstart.py", tmp_path / "run",
                                                    "--config.dataset.knn_train_split="),
                       tmp_path, "killed")
    wait_for(lambda: "Hyperparameters" in run.log(0) and "JAX process 1/2" in run.log(1),
             what="both processes to start")
    run.procs[1].kill()
    killed_at = time.time()
    code = run.procs[0].wait(timeout=TIMEOUT_S)
    detection_s = time.time() - killed_at
    print(f"dead peer: survivor exited with status {code} after {detection_s:.1f} s "
          f"(heartbeat timeout {HEARTBEAT_S} s)")
    assert code != 0
    log = run.log(0)
    assert "another task died" in log, log[-3000:]
    # JAX names the dead peer by its missed heartbeats, or, when the coordination service
    # sees the connection drop first, as crashed tasks: both are the clear message.
    assert any(m in log for m in ("Task 1 heartbeat timeout", "stopped sending heartbeats",
                                  "The tasks have crashed")), log[-3000:]
