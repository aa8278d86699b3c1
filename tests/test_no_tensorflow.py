"""Without TensorFlow (and clu), as on the accelerator hosts we are lent: every method's
`,runlocal` preset (the first config file of each method) imports its method and validates
with dataset.on_device, and one method per kind of view trains, saves and restores its
checkpoint: two views (the quickstart, which also learns: kNN above the same encoder at init,
both scored on the device, and loads as an encoder), one view with its example index and a
memory bank (InstDisc), Lab views with two banks (CMC), multi-crop views of two sizes (SwAV)
and per-patch views of a patch grid (CPC v2). The other methods' steps are the same JAX
programs whatever the input pipeline (tests/test_presets.py, tests/test_train_step_parity.py),
and what needs TensorFlow is the input pipeline. A run that needs TF says so in one line. One
subprocess for all configs (one interpreter start; compile time dominates)."""
import glob
import os
import subprocess
import sys
import textwrap

from no_tf import blocked_env
from tiny_configs import ROOT

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import simclr_jax
    from simclr_jax import checkpoint, train
    from simclr_jax.config_base import load_config_file
    from simclr_jax.data import sources
    from simclr_jax.config_validation import validate_config
    files, workroot, TRAINED = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    results, seen = {}, set()
    images = sources.get_source("digits", "test").images[:4]            # uint8 [4, 32, 32, 3]
    for path in files:
        c = load_config_file(path, "runlocal")
        if c.get("mode", "pretrain") != "pretrain":
            continue
        name = os.path.basename(path)
        full = name == "quickstart.py"    # learns, kNN (learned and at init), load_encoder
        if c.method in seen and not full:          # compile time: one preset per method
            continue
        seen.add(c.method)
        c.dataset.on_device = True
        validate_config(c)
        if name not in TRAINED:                   # compile time: one method per kind of view
            results[name] = {"validated": True}
            continue
        c.num_steps = 20 if full else 1
        c.eval.knn_at_init = full
        c.eval.every_steps = 1000                 # kNN once, at the end
        if not full:                              # compile time: kNN once is enough
            c.dataset.knn_train_split = ""
        c.log_every_steps = c.checkpoint_every_steps = c.num_steps
        workdir = os.path.join(workroot, name)
        summary = train.train_and_evaluate(c, workdir)
        arrays = checkpoint.restore_arrays(workdir)
        res = {"step": summary["step"], "restored_step": int(arrays["step"]),
               "finite": bool(np.isfinite(summary["loss"]))}
        if full:
            feats = np.asarray(simclr_jax.load_encoder(workdir)(images))
            res.update(knn_top1=summary["knn_top1"], knn_top1_init=summary["knn_top1_init"],
                       features=list(feats.shape), finite=bool(np.isfinite(feats).all()))
        results[name] = res
    blocked = sorted(m for m in ("tensorflow", "tensorflow_datasets", "clu") if m in sys.modules)
    print("RESULTS " + json.dumps({"results": results, "imported": blocked}))
""")


# One config file per kind of view the on-device path builds (see the module docstring).
TRAINED = ["quickstart.py", "instdisc.py", "cmc.py", "swav.py", "cpc_v2.py"]


def test_every_method_runs_on_device_without_tensorflow(tmp_path):
    files = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
    env = blocked_env(tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=1 "
                                          "--xla_backend_optimization_level=0")  # compile less
    r = subprocess.run([sys.executable, "-c", SCRIPT, __import__("json").dumps(files),
                        str(tmp_path), __import__("json").dumps(TRAINED)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-5000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULTS ")][-1]
    out = __import__("json").loads(line[len("RESULTS "):])
    results = out["results"]
    print(results)
    assert out["imported"] == []
    from simclr_jax.methods import available
    ran = {load_method(name) for name in results}
    assert ran == set(available()), ran
    assert set(TRAINED) <= set(results), results
    for name, res in results.items():
        if name in TRAINED:
            assert res["step"] == res["restored_step"] > 0 and res["finite"], (name, res)
        else:
            assert res == {"validated": True}, (name, res)
    quick = results["quickstart.py"]
    assert quick["features"][0] == 4, quick
    assert quick["knn_top1"] > quick["knn_top1_init"] + 0.05, quick


def load_method(file: str) -> str:
    from simclr_jax.config_base import load_config_file
    return load_config_file(os.path.join(ROOT, "configs", file)).method


def test_a_run_that_needs_tensorflow_says_so_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "simclr_jax.main",
                        "--config", os.path.join(ROOT, "configs", "quickstart.py:runlocal"),
                        "--workdir", str(tmp_path / "run")], cwd=ROOT,
                       env=blocked_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "needs TensorFlow" in errors[0], r.stderr[-3000:]
    assert "dataset.on_device=true" in errors[0] and "Traceback" not in r.stderr
