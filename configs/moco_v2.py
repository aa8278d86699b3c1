"""MoCo v2 (Chen et al., 2020): MoCo v1 + MLP head (2048-2048-128), aug+ (blur), cosine LR, T 0.2.

imagenet_200ep / imagenet_800ep — ResNet-50, SGD lr 0.03 (batch 256), wd 1e-4, K 65536,
    m 0.999, shuffle BN over groups of 32. Published linear top-1: 67.5 / 71.1.
    python -m simclr_jax.main --config configs/moco_v2.py:imagenet_200ep --workdir DIR
cifar10 — the official CIFAR-10 colab recipe: ResNet-18 (CIFAR stem), batch 512, SGD lr 0.06,
    wd 5e-4, K 4096, m 0.99, T 0.1, 200 epochs, cosine; kNN monitor (k 200, T 0.1).
    Published: kNN top-1 82.6% after 200 epochs (colab, 1 GPU).
    python -m simclr_jax.main --config configs/moco_v2.py:cifar10 --workdir DIR
"""
from simclr_jax.config_base import base_config
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_200ep", "imagenet_800ep", "cifar10")


def get_config(arg="imagenet_200ep"):
    arg = arg or "imagenet_200ep"
    if arg not in PRESETS:
        raise ValueError(f"unknown preset {arg!r} for moco_v2; valid: {', '.join(PRESETS)}")
    c = base_config()
    c.method = "moco"
    c.head.kind, c.head.hidden_dim, c.head.out_dim = "moco_v2", 2048, 128
    c.momentum.schedule = "constant"
    c.moco.shuffle_bn = True
    c.model.bn_group_size = 32
    c.optimizer.name, c.optimizer.lr_scaling, c.optimizer.decay_all = "sgd", "linear", True
    c.lr_schedule = "cosine"
    c.warmup_epochs = 0.0
    if arg.startswith("imagenet"):
        c.dataset.name, c.dataset.image_size = "imagenet2012", 224
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.stem = 50, "imagenet"
        c.batch_size, c.num_epochs = 256, 200.0 if arg == "imagenet_200ep" else 800.0
        c.optimizer.base_lr, c.optimizer.weight_decay = 0.03, 1e-4
        c.moco.queue_size, c.momentum.base = 65536, 0.999
        c.loss.temperature = 0.2
        c.eval.knn_temperature = 0.07
        c.eval.every_steps = 10000
        c.checkpoint_every_steps = 2000
        view = aug_presets.moco_v2()
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.model.depth, c.model.stem = 18, "cifar"
        c.head.hidden_dim = 512
        c.batch_size, c.num_epochs = 512, 200.0
        c.optimizer.base_lr = 0.06 * 256 / 512   # 0.06 at batch 512 under linear scaling
        c.optimizer.weight_decay = 5e-4
        c.moco.queue_size, c.momentum.base = 4096, 0.99
        c.loss.temperature = 0.1
        c.eval.every_steps = 2000
        view = aug_presets.moco_v2()
        view.blur_prob = 0.0                    # the colab drops blur at 32 px
    c.aug = aug_presets.two_views(view, view)
    return c
