"""MoCo v3 (Chen, Xie & He, 2021): symmetric ctr loss x 2T, projector + predictor, cosine EMA.

r50_100ep / r50_300ep / r50_1000ep — ResNet-50, LARS (no wd/trust ratio on biases and BN),
    batch 4096, lr 0.6 / 0.3 / 0.3 x B/256, wd 1e-6 (1.5e-6 at 1000 ep), T 1.0, m 0.99 -> 1
    (0.996 at 1000 ep), warmup 10 epochs, crop min 0.2 (CONFIG.md's --crop-min=.2), asymmetric
    BYOL-style views, LARS with the LR after the momentum buffer (moco/optimizer.py), torchvision
    ResNet with zero_init_residual=True. Published linear top-1: 68.9 / 72.8 / 74.6 (2 nodes of
    8 V100 32G); linear evaluation: configs/linear_eval.py:moco_v3.
vit_small / vit_base — ViT-S/16 (12 heads) / ViT-B/16, AdamW lr 1.5e-4 x B/256 (betas 0.9,
    0.999: torch's defaults), wd 0.1, T 0.2, 300 epochs, warmup 40, frozen random patch
    projection. Published: 73.2 / 76.7 (batch 4096); linear_eval.py:moco_v3_vit.
cifar10 — ResNet-18 CIFAR stem, batch 512, LARS lr 0.3 x B/256 ... see BENCHMARKS.md for runs.
    (solo-learn R18 MoCo v3 1000 ep: 93.10 linear.)
    python -m simclr_jax.main --config configs/moco_v3.py:r50_100ep --workdir DIR
The key encoder is updated with m_{k+1} just before the keys of step k+1, as main_moco.py.
Deliberate differences from the official code and the hardware each number needs: FIDELITY.md.
"""
from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("r50_100ep", "r50_300ep", "r50_1000ep", "vit_small", "vit_base", "cifar10")


@with_presets(PRESETS, default="r50_100ep")
def get_config(arg):
    c = base_config()
    c.method = "moco_v3"
    c.head.kind = "bn_mlp_nonaffine"      # no biases, BN, last BN without affine; + predictor
    c.head.num_layers, c.head.hidden_dim, c.head.out_dim = 2, 4096, 256
    c.predictor.hidden_dim, c.predictor.last_bn = 4096, False
    c.ema.schedule, c.ema.base = "cosine", 0.99
    c.model.conv_init, c.model.zero_init_residual = "torchvision", True
    c.optimizer.lars_lr = "after_momentum"      # moco/optimizer.py LARS (used when name=lars)
    c.aug = aug_presets.two_views(aug_presets.moco_v3_view1(), aug_presets.moco_v3_view2())
    c.dataset.name, c.dataset.image_size = "imagenet2012", 224
    c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
    c.eval.knn_temperature = 0.07
    c.eval.every_steps = 10000
    c.checkpoint_every_steps = 2000
    c.batch_size = 4096
    if arg.startswith("r50"):
        epochs = {"r50_100ep": 100.0, "r50_300ep": 300.0, "r50_1000ep": 1000.0}[arg]
        c.model.depth, c.model.stem = 50, "imagenet"
        c.head.num_layers = 2                     # moco-v3 ResNet projector: 2 layers
        c.num_epochs, c.warmup_epochs = epochs, 10.0
        c.optimizer.name, c.optimizer.lr_scaling = "lars", "linear"
        c.optimizer.base_lr = 0.6 if arg == "r50_100ep" else 0.3
        c.optimizer.weight_decay = 1.5e-6 if arg == "r50_1000ep" else 1e-6
        c.ema.base = 0.996 if arg == "r50_1000ep" else 0.99
        c.loss.temperature = 1.0
        c.aug = aug_presets.two_views(aug_presets.moco_v3_view1(crop_area_min=0.2),
                                      aug_presets.moco_v3_view2(crop_area_min=0.2))
    elif arg.startswith("vit"):
        c.model.name = "vit"
        c.model.variant = "small" if arg == "vit_small" else "base"
        c.model.patch_size = 16
        c.model.stop_grad_patch_embed = True
        c.head.num_layers = 3
        c.predictor.last_bn = True
        c.num_epochs, c.warmup_epochs = 300.0, 40.0
        c.optimizer.name, c.optimizer.lr_scaling = "adamw", "linear"
        c.optimizer.base_lr, c.optimizer.weight_decay = 1.5e-4, 0.1
        c.optimizer.b1, c.optimizer.b2 = 0.9, 0.999  # torch.optim.AdamW defaults
        c.loss.temperature = 0.2
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train", "test"
        c.eval.knn_temperature = 0.1
        c.eval.every_steps = 2000
        c.model.depth, c.model.stem = 18, "cifar"
        c.head.hidden_dim, c.predictor.hidden_dim = 2048, 2048
        c.batch_size, c.num_epochs, c.warmup_epochs = 512, 1000.0, 10.0
        c.optimizer.name, c.optimizer.lr_scaling = "lars", "linear"
        c.optimizer.base_lr, c.optimizer.weight_decay = 0.3, 1e-5
        c.ema.base = 0.99
        c.loss.temperature = 0.2
        v1, v2 = aug_presets.moco_v3_view1(), aug_presets.moco_v3_view2()
        for v in (v1, v2):
            v.blur_prob = 0.0
        c.aug = aug_presets.two_views(v1, v2)
    return c
