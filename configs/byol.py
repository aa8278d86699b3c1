"""BYOL (Grill et al., 2020): online projector+predictor regress an EMA target, no negatives.

imagenet_300ep / imagenet_1000ep — ResNet-50, LARS (no wd/trust ratio on biases and BN; LR
    applied after the momentum buffer, byol/utils/optimizers.py), batch 4096, lr 0.3 / 0.2 x
    B/256, wd 1e-6 / 1.5e-6 (configs/byol.py _WD_PRESETS), tau 0.99 / 0.996 -> 1 (cosine),
    warmup 10 epochs, projector/predictor 4096-256, asymmetric views (blur 1.0/0.1, solarize
    0.0/0.2), TF SAME stem max pool. Published linear top-1: 72.5 (300 ep), 74.3 (1000 ep;
    ~8 h on 512 TPU v3 cores); linear evaluation: configs/linear_eval.py:byol.
    python -m simclr_jax.main --config configs/byol.py:imagenet_300ep --workdir DIR
cifar10 — ResNet-18 CIFAR stem, batch 512, LARS lr 1.0 x B/256, wd 1e-5, tau 0.99, 1000 epochs,
    no blur. (solo-learn R18 BYOL 1000 ep: 92.58 linear.)
Deliberate differences from the official code and the hardware each number needs: FIDELITY.md.
"""
from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_300ep", "imagenet_1000ep", "cifar10")


@with_presets(PRESETS, default="imagenet_300ep")
def get_config(arg):
    c = base_config()
    c.method = "byol"
    c.head.kind, c.head.hidden_dim, c.head.out_dim = "bn_mlp_biased", 4096, 256
    c.predictor.hidden_dim = 4096
    c.ema.schedule = "cosine"
    c.optimizer.name, c.optimizer.lr_scaling = "lars", "linear"
    c.optimizer.lars_lr = "after_momentum"
    c.model.stem_pool_padding = "same"          # hk.max_pool(..., padding="SAME")
    c.aug = aug_presets.two_views(aug_presets.byol_view1(), aug_presets.byol_view2())
    if arg.startswith("imagenet"):
        c.dataset.name, c.dataset.image_size = "imagenet2012", 224
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.stem = 50, "imagenet"
        c.batch_size = 4096
        c.num_epochs = 300.0 if arg == "imagenet_300ep" else 1000.0
        c.warmup_epochs = 10.0
        c.optimizer.base_lr = 0.3 if arg == "imagenet_300ep" else 0.2
        c.optimizer.weight_decay = 1e-6 if arg == "imagenet_300ep" else 1.5e-6
        c.ema.base = 0.99 if arg == "imagenet_300ep" else 0.996
        c.eval.knn_temperature = 0.07
        c.eval.every_steps = 10000
        c.checkpoint_every_steps = 2000
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.model.depth, c.model.stem = 18, "cifar"
        c.head.hidden_dim, c.predictor.hidden_dim = 4096, 4096
        c.batch_size, c.num_epochs, c.warmup_epochs = 512, 1000.0, 10.0
        c.optimizer.base_lr, c.optimizer.weight_decay = 1.0, 1e-5
        c.ema.base = 0.99
        c.eval.every_steps = 2000
        v1, v2 = aug_presets.byol_view1(), aug_presets.byol_view2()
        for v in (v1, v2):
            v.blur_prob = 0.0
        c.aug = aug_presets.two_views(v1, v2)
    return c
