"""The input pipeline across topologies and at exit.

- The global batch of step k depends on (seed, k) only: the rows that 2 processes materialise,
  put side by side, are the batch one process makes, across an epoch boundary and when resuming
  mid-run. (End to end through the CLI: tests/test_multiprocess.py.)
- The pipeline's iterators are destroyed at interpreter exit without hanging, even on one core
  (a tf.numpy_function gather hung there in 4 of 6 runs pinned with `taskset -c 0`).
"""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tiny_configs import ROOT

from simclr_jax.data import aug_presets, pipeline, sources

BATCH, SIZE, SEED = 64, 8, 3


def process_rows(source, pc: int, pi: int, start_step: int, steps: int) -> list:
    """Process pi of pc's local batches of steps start_step.. (what pretrain_batches feeds to
    parallel.to_global on that process)."""
    aug = aug_presets.two_views(aug_presets.simclr(), aug_presets.byol_view2())
    batches = pipeline.local_pretrain_batches(source, aug, global_batch_size=BATCH,
                                              image_size=SIZE, seed=SEED, start_step=start_step,
                                              process_index=pi, process_count=pc)
    return [next(batches) for _ in range(steps)]


def test_global_batch_is_the_same_for_any_process_count():
    source = sources.get_source("digits", "train")          # 1438 examples: epoch 0 ends in step 22
    start, steps = 21, 2                                    # resume mid-run, across the epoch end
    one = process_rows(source, 1, 0, start, steps)
    shares = [process_rows(source, 2, pi, start, steps) for pi in range(2)]
    for k in range(steps):
        for key in ("view1", "view2", "label", "index"):
            glued = np.concatenate([shares[0][k][key], shares[1][k][key]])
            np.testing.assert_array_equal(glued, one[k][key], err_msg=f"step {start + k} {key}")


def test_every_view_at_its_own_size_and_the_index_names_the_example():
    """Three views (a multi-crop shape: one at the dataset's size, two small ones); "index" is
    the example's position in the split: its label is the batch's label and an un-augmented
    full-image view equals that example's image resized, for every row."""
    import tensorflow as tf
    source = sources.get_source("digits", "train")
    plain = aug_presets.view(crop_area_min=1.0, crop_aspect_min=1.0, crop_aspect_max=1.0,
                             flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0,
                             resize_method="bilinear")
    small = aug_presets.simclr(blur_prob=0.0)
    small.image_size = 6
    aug = aug_presets.two_views(plain, small)
    aug.view3 = aug_presets.simclr(blur_prob=0.0, crop_area_min=0.05)
    aug.view3.image_size = 4
    batch = next(pipeline.local_pretrain_batches(source, aug, global_batch_size=32,
                                                 image_size=SIZE, seed=SEED))
    assert (batch["view1"].shape, batch["view2"].shape, batch["view3"].shape) == (
        (32, SIZE, SIZE, 3), (32, 6, 6, 3), (32, 4, 4, 3))
    index = batch["index"]
    assert index.dtype == np.int32 and len(set(index.tolist())) == 32     # distinct examples
    np.testing.assert_array_equal(source.labels[index], batch["label"])
    want = tf.image.resize(source.images[index].astype(np.float32), [SIZE, SIZE],
                           method="bilinear", antialias=False).numpy() / 255.0
    np.testing.assert_allclose(batch["view1"], want, atol=2e-2)   # uint8 rounding of the resize


EXIT_SCRIPT = textwrap.dedent("""
    from simclr_jax import parallel
    from simclr_jax.data import aug_presets, pipeline, sources
    aug = aug_presets.two_views(aug_presets.simclr(), aug_presets.simclr())
    batches = pipeline.pretrain_batches(sources.get_source("digits", "train"), aug,
                                        global_batch_size=64, image_size=16, seed=0,
                                        mesh=parallel.make_mesh())
    for _ in range(3):
        next(batches)
    print("read 3 batches", flush=True)
""")


@pytest.mark.skipif(not shutil.which("taskset"), reason="needs taskset")
def test_exit_after_reading_batches_does_not_hang_on_one_core():
    env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    for run in range(3):
        try:
            r = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", EXIT_SCRIPT],
                               env=env, capture_output=True, text=True, timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run {run}: the interpreter hung at exit after reading the batches")
        assert r.returncode == 0 and "read 3 batches" in r.stdout, r.stderr[-2000:]
