"""gs:// workdirs end to end on a local GCS emulator (issue 9, item 4).

pretrain -> SIGKILL -> resume -> knn_eval -> export -> load_encoder, all with gs://bucket/...
paths. Each layer is pointed at the emulator by its own setting:
  orbax arrays (tensorstore)   TENSORSTORE_GCS_HTTP_URL + GOOGLE_AUTH_TOKEN_FOR_TESTING
  epath (orbax's directories, history/config/metrics JSON, export)
                               EPATH_USE_TF=false (gcsfs backend) + STORAGE_EMULATOR_HOST
  TensorBoard writer           cannot be (TensorFlow's GCS endpoint is fixed): logging only.
The emulator (tests/gcs_emulator.py) adds the x-goog-generation header real GCS sends and
tensorstore needs. tests/gcs_cli.py runs each entry point with a guard that fails the run if simclr_jax passes a
gs:// string to os.path / os / open.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from test_reliability import cli_env, write_config_file
from tiny_configs import ROOT

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcs_cli.py")
EMULATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcs_emulator.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator():
    port = free_port()
    proc = subprocess.Popen([sys.executable, EMULATOR, "start",
                             "--port", str(port), "--default-bucket", "bucket", "-q", "-M"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b/bucket", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait()


def objects(url, prefix) -> list:
    """Names of the emulator's objects under prefix (read straight from its JSON API)."""
    with urllib.request.urlopen(f"{url}/storage/v1/b/bucket/o?prefix={prefix}"
                                f"&maxResults=10000") as r:
        return [o["name"] for o in json.load(r).get("items", [])]


def read(url, name) -> str:
    with urllib.request.urlopen(f"{url}/download/storage/v1/b/bucket/o/"
                                f"{urllib.parse.quote(name, safe='')}?alt=media") as r:
        return r.read().decode()


def test_gs_workdir_round_trip(emulator, tmp_path):
    env = cli_env(STORAGE_EMULATOR_HOST=emulator, EPATH_USE_TF="false",
                  TENSORSTORE_GCS_HTTP_URL=emulator, GOOGLE_AUTH_TOKEN_FOR_TESTING="test",
                  JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

    def run(*args, timeout=300):
        r = subprocess.run([sys.executable, HELPER, *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, (args, r.stderr[-3000:])
        return r

    config = write_config_file(tmp_path / "cfg.py", checkpoint_every_steps=1)
    pretrain = ["main", "--config", config, "--workdir", "gs://bucket/run"]

    # Pretrain, SIGKILL once a checkpoint is committed in the bucket, resume to the end.
    proc = subprocess.Popen([sys.executable, HELPER, *pretrain], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    committed = re.compile(r"run/checkpoints/\d+/commit_success.txt")
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if any(committed.fullmatch(n) for n in objects(emulator, "run/checkpoints/")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    resumed = run(*pretrain)
    assert "finished at step 4" in resumed.stdout, resumed.stdout
    assert "Resumed from checkpoint" in resumed.stderr

    stored = objects(emulator, "run/")
    assert {"run/config.json", "run/final_metrics.json", "run/history.jsonl"} <= set(stored)
    assert "run/lock.json" not in stored and any(committed.fullmatch(n) for n in stored)
    events = [json.loads(line) for line in read(emulator, "run/history.jsonl").splitlines()]
    assert [e["event"] for e in events if e["event"] == "start"] == ["start", "start"]
    assert events[1]["start_step"] > 0          # the second start resumed a checkpoint
    final = json.loads(read(emulator, "run/final_metrics.json"))

    # Standalone kNN of the checkpoint read back from the bucket = the trainer's own kNN.
    run("main", "--config", os.path.join(ROOT, "configs", "knn_eval.py"),
        "--config.init_from=gs://bucket/run", "--config.eval.batch_size=64",
        "--workdir", "gs://bucket/knn")
    knn = json.loads(read(emulator, "knn/knn_eval.json"))
    assert knn["step"] == 4 and knn["knn_top1"] == final["knn_top1"]

    # Export to the bucket; the exported encoder equals the one loaded from the workdir.
    run("export", "--workdir", "gs://bucket/run", "--out", "gs://bucket/encoder")
    assert "encoder/encoder_config.json" in objects(emulator, "encoder/")
    out = run("features", "gs://bucket/encoder", "gs://bucket/run").stdout
    diff, std = map(float, re.search(r"max_abs_diff=(\S+) std=(\S+)", out).groups())
    assert diff == 0.0 and std > 0

    # Nothing landed on the local disk under a mangled "gs:" name.
    assert not [p for p in os.listdir(tmp_path) if p.startswith("gs:")]
