"""benchmarks/device_run.sh --smoke where TensorFlow, TFDS and clu cannot be imported (as on
the lent accelerator): every part starts and ends, the report ends with its tables."""
import os
import subprocess
import sys

from no_tf import blocked_env
from tiny_configs import ROOT


def test_device_run_smoke_without_tensorflow(tmp_path):
    out = tmp_path / "out"
    env = blocked_env(tmp_path, PYTHON=sys.executable, OUT=str(out),
                      XLA_FLAGS="--xla_force_host_platform_device_count=1 "
                                "--xla_backend_optimization_level=0")
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_run.sh"), "--smoke"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    report = (out / "device_run.md").read_text()
    print(report)
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    ips = [line for line in rows if line.startswith(("| simclr_r50_bf16 |",
                                                     "| moco_v3_vit_s_bf16 |"))]
    assert len(ips) == 2 and all(float(line.split("|")[2]) > 0 for line in ips), report
    assert any(line.startswith("| torch SimCLR") for line in rows), report
    assert "JAX / PyTorch on this card" in report, report
    epochs = [line for line in rows if line.split("|")[1].strip() in ("1", "2")]
    assert len(epochs) == 2, report           # kNN after each of two epochs, then SIGTERM
    assert "## (c) What did not run, and why\n- everything ran" in report, report
    for name in ("tensorflow", "clu"):
        for log in ("accelerator.log", "learning_run.log"):
            assert f"{name} is not installed" not in (out / log).read_text(), log
