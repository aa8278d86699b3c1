"""Load the real config files and shrink them to test size (tiny backbone, tiny images)."""
import os

import numpy as np

from simclr_jax.config_base import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(file: str, preset: str | None = None):
    return load_config_file(os.path.join(ROOT, "configs", file), preset)


def shrink(c, *, batch_size=16, image_size=16, steps=2):
    """Same method and recipe, test-sized: ResNet-10 (one block per stage; ResNet-14 where
    Selective Kernels need bottlenecks) at width 1/8, 16 px digits, 2 steps."""
    c.unlock()
    c.dataset.name = "digits"
    c.dataset.data_dir = None
    c.dataset.train_split, c.dataset.knn_train_split, c.dataset.knn_test_split = (
        "train", "train", "test")
    c.dataset.image_size = image_size
    if c.model.name == "vit":
        c.model.variant = "tiny_test"
        c.model.patch_size = 4
    elif c.model.sk_ratio > 0:   # Selective Kernels live in bottleneck blocks (+ ResNet-D stem)
        c.model.depth, c.model.width, c.model.stem = 14, 0.125, "imagenet"
    else:
        c.model.depth, c.model.width, c.model.stem = 10, 0.125, "cifar"
    if c.model.get("bn_group_size") is not None:
        c.model.bn_group_size = 4
    c.head.hidden_dim = 32
    c.head.out_dim = 16
    c.predictor.hidden_dim = 32
    c.batch_size = batch_size
    c.num_epochs = None
    c.num_steps = steps
    c.warmup_epochs = 0.0
    if c.method == "moco":
        c.moco.queue_size = 4 * batch_size
    if c.method == "simclr" and c.simclr.memory:
        c.moco.queue_size = 4 * 2 * batch_size
    for v in (c.aug.view1, c.aug.view2):
        v.blur_prob = min(v.blur_prob, 0.5)
    c.eval.every_steps = 1000
    c.eval.batch_size = 64
    c.eval.knn_k = 10
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
