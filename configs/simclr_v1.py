"""SimCLR v1 (Chen et al., 2020) presets.

cifar10 — the official README's CIFAR-10 command: ResNet-18 (CIFAR stem, SimCLR's projection
    shortcuts), 3-layer head, batch 512, LARS lr 1.0 x B/256, wd 1e-4, T 0.5, 1000 epochs,
    colour strength 0.5, no blur. Published: ~91% linear top-1 (README; solo-learn R18 90.74).
    Needs TFDS cifar10 (downloads on first use; offline: --config.dataset.data_dir=...).
    python -m simclr_jax.main --config configs/simclr_v1.py:cifar10 --workdir /tmp/simclr_c10
    One accelerator (GPU/TPU core): hours; CPU: use --config.num_epochs=... for a short run.
cifar10_folder — the same recipe on an image folder of CIFAR-10 (class sub-folders), holding out
    the last 500 images of each class for kNN:
    --config.dataset.name=folder:/path/to/cifar10-train
imagenet, imagenet_2x, imagenet_4x — ResNet-50 1x/2x/4x, batch 4096, LARS lr 0.3 x B/256,
    wd 1e-6, T 0.1, warmup 10 epochs, cosine, 100 epochs (override --config.num_epochs=1000),
    colour strength 1.0, blur p 0.5. Published linear top-1 (1000 ep): 69.1 / 74.2 / 76.6.
    "100 epochs, batch 4096 ~ 6 h on 32 TPU v3 cores" (paper). Needs TFDS imagenet2012
    prepared under --config.dataset.data_dir.
    python -m simclr_jax.main --config configs/simclr_v1.py:imagenet --workdir gs://.../r50
Architecture as SimCLR tf2's resnet.py: projection shortcut on every stage's first block, TF SAME
stem max pool. Every deliberate difference from the official code, and the hardware each
published number needs: FIDELITY.md.
"""
from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("cifar10", "cifar10_folder", "imagenet", "imagenet_2x", "imagenet_4x")


@with_presets(PRESETS, default="cifar10")
def get_config(arg):
    c = base_config()
    c.method = "simclr"
    c.head.num_layers = 2
    c.head.hidden_dim = 0           # = backbone width (2048 for R50 1x)
    c.head.out_dim = 128
    c.optimizer.name = "lars"
    c.model.shortcut, c.model.stem_pool_padding = "first_block_of_stage", "same"
    if arg.startswith("cifar10"):
        c.dataset.name = "cifar10"
        c.dataset.train_split, c.dataset.knn_train_split, c.dataset.knn_test_split = (
            "train", "train", "test")
        if arg == "cifar10_folder":
            c.dataset.name = "folder:/path/to/cifar10-train"
            c.dataset.train_split = "train[:4500]"
            c.dataset.knn_train_split = "train[:4500]"
            c.dataset.knn_test_split = "train[4500:]"
        c.dataset.image_size = 32
        c.model.depth, c.model.width, c.model.stem = 18, 1.0, "cifar"
        c.head.num_layers = 3       # the README's CIFAR-10 command keeps num_proj_layers=3
        c.batch_size = 512
        c.num_epochs = 1000.0
        c.warmup_epochs = 10.0
        c.optimizer.base_lr, c.optimizer.lr_scaling, c.optimizer.weight_decay = 1.0, "linear", 1e-4
        c.loss.temperature = 0.5
        view = aug_presets.simclr(strength=0.5, blur_prob=0.0)
        c.eval.every_steps = 5000
        c.eval.knn_temperature = 0.1
    else:
        width = {"imagenet": 1.0, "imagenet_2x": 2.0, "imagenet_4x": 4.0}[arg]
        c.dataset.name = "imagenet2012"
        c.dataset.train_split, c.dataset.knn_train_split, c.dataset.knn_test_split = (
            "train", "train[:10%]", "validation")
        c.dataset.image_size = 224
        c.model.depth, c.model.width, c.model.stem = 50, width, "imagenet"
        c.batch_size = 4096
        c.num_epochs = 100.0
        c.warmup_epochs = 10.0
        c.optimizer.base_lr, c.optimizer.lr_scaling, c.optimizer.weight_decay = 0.3, "linear", 1e-6
        c.loss.temperature = 0.1
        view = aug_presets.simclr(strength=1.0, blur_prob=0.5)
        c.eval.every_steps = 10000
        c.eval.batch_size = 1024
        c.eval.knn_temperature = 0.07
        c.checkpoint_every_steps = 2000
    c.aug = aug_presets.two_views(view, view)
    return c
