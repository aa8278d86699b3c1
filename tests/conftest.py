"""Test setup: 8 virtual CPU devices so sharding, cross-replica BN and the queue are exercised.

XLA reads the flag when the CPU backend starts, so it must be set before jax is imported.
"""
import atexit
import os
import shutil
import tempfile

# Optimisation level 0 halves XLA's CPU compile time (which dominates these tiny-model tests);
# every comparison is between programs compiled with the same flags, or against numpy.
TEST_XLA_FLAGS = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the session, inherited by the CLI subprocesses: many
# tests compile the same tiny programs in different processes, and compiling dominates.
_CACHE = tempfile.mkdtemp(prefix="simclr_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import tensorflow as tf  # noqa: E402  (keep TF off any accelerator; tf.data only)

tf.config.set_visible_devices([], "GPU")


# The suite runs on 2 workers (pyproject.toml: -n 2 --dist loadfile --no-loadscope-reorder), a
# file per worker at a time. The files that take longest (measured 2026-12-06 on the 2-core VM,
# under the other worker's load: 408, 252, 220, 162, 143 s ...) start first, so that no worker
# is left alone with a long file at the end (that tail cost 7 of 21 minutes when they ran last).
LONGEST_FIRST = ("test_multiprocess.py", "test_reliability.py", "test_presets.py",
                 "test_train_step_parity.py", "test_device_dataset_runs.py", "test_quickstart.py",
                 "test_no_tensorflow.py", "test_instdisc.py", "test_device_run.py", "test_gcs.py",
                 "test_weights.py", "test_method_contract.py", "test_swav.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)        # stable: a file's tests keep their order and stay together
