"""Load the real config files and shrink them to test size (tiny backbone, tiny images)."""
import os

import numpy as np

from simclr_jax.config_base import load_config_file, runlocal
from simclr_jax.data.aug_presets import view_names
from simclr_jax.methods import get_method

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
    get_method(c.method).runlocal(c)          # the method's queue/bank sizes for this batch
    for name in view_names(c.aug):
        c.aug[name].blur_prob = min(c.aug[name].blur_prob, 0.5)
    c.eval.every_steps = 1000
    c.eval.knn_at_init = False
    c.log_every_steps = 1
    c.checkpoint_every_steps = 1000
    c.log_images = False
    c.lock()
    return c


def tiny(method_file="quickstart.py", preset=None, **kw):
    return shrink(load_config(method_file, preset), **kw)


def random_batch(B, S, seed=0, num_views=2, sizes=None):
    """A pretraining batch of uniform noise: [B, S, S, 3] views (or [B, S_v, S_v, 3] with
    `sizes`, one per view: multi-crop), labels in [0, 10) and each example's index in a training
    split of 1000."""
    rng = np.random.default_rng(seed)
    sizes = list(sizes) if sizes else [S] * num_views
    batch = {f"view{v + 1}": rng.uniform(size=(B, s, s, 3)).astype(np.float32)
             for v, s in enumerate(sizes)}
    batch["label"] = rng.integers(0, 10, size=(B,)).astype(np.int32)
    batch["index"] = rng.permutation(1000)[:B].astype(np.int32)
    return batch


def config_batch(config, B, seed=0):
    """random_batch with the config's views at their own sizes (multi-crop configs)."""
    S = config.dataset.image_size
    sizes = [config.aug[name].get("image_size") or S for name in view_names(config.aug)]
    return random_batch(B, S, seed=seed, sizes=sizes)
