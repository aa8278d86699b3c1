"""Load the real config files and shrink them to test size (tiny backbone, tiny images)."""
import os

import numpy as np

from simclr_jax.config_base import load_config_file, runlocal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(file: str, preset: str | None = None):
    return load_config_file(os.path.join(ROOT, "configs", file), preset)


def shrink(c, *, batch_size=16, image_size=16, steps=2):
    """The preset's `runlocal` version (same recipe: ResNet-10, or ResNet-14 where Selective
    Kernels need bottlenecks, at width 1/8 on the digits) at test size: `steps` steps, no
    periodic kNN, checkpoint or image, metrics every step."""
    c = runlocal(c)
    c.dataset.image_size = image_size
    c.batch_size, c.num_steps = batch_size, steps
    if c.method == "moco":
        c.moco.queue_size = 4 * batch_size
    if c.method == "simclr" and c.simclr.memory:
        c.simclr.memory_size = 4 * 2 * batch_size
    for v in (c.aug.view1, c.aug.view2):
        v.blur_prob = min(v.blur_prob, 0.5)
    c.eval.every_steps = 1000
    c.eval.knn_at_init = False
    c.log_every_steps = 1
    c.checkpoint_every_steps = 1000
    c.log_images = False
    c.lock()
    return c


def tiny(method_file="quickstart.py", preset=None, **kw):
    return shrink(load_config(method_file, preset), **kw)


def random_batch(B, S, seed=0):
    """A pretraining batch of uniform noise: two [B, S, S, 3] views and labels in [0, 10)."""
    rng = np.random.default_rng(seed)
    return {"view1": rng.uniform(size=(B, S, S, 3)).astype(np.float32),
            "view2": rng.uniform(size=(B, S, S, 3)).astype(np.float32),
            "label": rng.integers(0, 10, size=(B,)).astype(np.int32)}
