"""MoCo v1 (He et al., 2020): ResNet-50, linear 128-d head, queue 65536, m 0.999, T 0.07.

imagenet_200ep — SGD lr 0.03 (batch 256), wd 1e-4 on all parameters, LR x0.1 at epochs 120 and
    160, shuffle BN over groups of 32 (the reference's per-GPU batch on 8 GPUs), grayscale 0.2
    then colour jitter 0.4 always. Published linear top-1: 60.6 (8 V100, 53 h).
    python -m simclr_jax.main --config configs/moco_v1.py:imagenet_200ep --workdir DIR
cifar10 — the same recipe scaled to CIFAR-10 (R18 CIFAR stem, K 4096, batch 256).
torchvision ResNet init (kaiming normal fan_out, no zero-init of the last BN). Deliberate
differences from the official code and the hardware each number needs: FIDELITY.md.
"""
from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_200ep", "cifar10")


@with_presets(PRESETS, default="imagenet_200ep")
def get_config(arg):
    c = base_config()
    c.method = "moco"
    c.head.kind, c.head.out_dim = "linear", 128
    c.ema.base, c.ema.schedule = 0.999, "constant"
    c.moco.shuffle_bn = True
    c.model.bn_group_size = 32
    c.model.conv_init, c.model.zero_init_residual = "torchvision", False
    c.optimizer.name, c.optimizer.base_lr, c.optimizer.lr_scaling = "sgd", 0.03, "linear"
    c.optimizer.weight_decay, c.optimizer.decay_all = 1e-4, True
    c.loss.temperature = 0.07
    c.batch_size = 256
    c.num_epochs = 200.0
    c.warmup_epochs = 0.0
    c.lr_schedule, c.lr_boundaries_epochs = "step", (120, 160)
    view = aug_presets.moco_v1()
    if arg == "imagenet_200ep":
        c.dataset.name, c.dataset.image_size = "imagenet2012", 224
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.stem = 50, "imagenet"
        c.moco.queue_size = 65536
        c.eval.knn_temperature = 0.07
        c.eval.every_steps = 10000
        c.checkpoint_every_steps = 2000
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.model.depth, c.model.stem = 18, "cifar"
        c.moco.queue_size = 4096
        c.eval.every_steps = 2000
    c.aug = aug_presets.two_views(view, view)
    return c
