"""CPC v2 (Henaff et al. 2020, arXiv 1905.09272): patch-grid contrastive predictive coding.
No official code; choices the paper leaves open are in FIDELITY.md.

imagenet_r50 — the paper's ResNet-50 row: ResNet-50 with layer norm in place of every BN,
    7 x 7 grid of 64 px patches with stride 32 from a 256 px crop, per-patch colour dropping
    and flips, the appendix pseudo-code's context network (5 masked residual blocks, width
    256) and InfoNCE (target_dim 64, emb_scale 0.1), predictions 1..5 rows ahead in the four
    directions, negatives: every patch of the global batch. Adam (the appendix's optimizer),
    batch 512. Published ImageNet linear top-1: 63.8 (paper, Table "linear classification";
    ResNet-50). Hardware of the paper: TPUs (the count and time are not stated per model).
    python -m simclr_jax.main --config configs/cpc_v2.py:imagenet_r50 --workdir DIR
imagenet_r161 — the paper's best model: ResNet-161 (the first three stacks of ResNet-101, the
    third converted to 46 blocks with 512-wide bottlenecks and 4096-channel outputs; 304M
    parameters, 4096 features) with layer norm, the same recipe. Published ImageNet linear
    top-1: 71.5. Whether its blocks are pre-activation (ResNet v2, as CPC v1's) is not stated:
    v1.5 blocks here (FIDELITY.md).
    python -m simclr_jax.main --config configs/cpc_v2.py:imagenet_r161 --workdir DIR
cifar10 — the paper has no CIFAR recipe: its geometry scaled by 1/8 (a 7 x 7 grid of 8 px
    patches with stride 4 on 32 px images, predictions 1..5 ahead), the CIFAR ResNet-18 with
    layer norm, Adam, batch 512, 300 epochs. No published number. One GPU.
    python -m simclr_jax.main --config configs/cpc_v2.py:cifar10 --workdir DIR
"""
import ml_collections

from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_r50", "imagenet_r161", "cifar10")


def crop_view(**overrides) -> ml_collections.ConfigDict:
    """The crop the patch grid is cut from: random crop + flip, no colour jitter (colour
    dropping is per patch, in the step)."""
    fields = dict(crop_area_min=0.08, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                  flip_prob=0.5, resize_method="bilinear", antialias=True, normalize="imagenet")
    fields.update(overrides)
    return aug_presets.view(**fields)


@with_presets(PRESETS, default="imagenet_r50")
def get_config(arg):
    c = base_config()
    c.method = "cpc_v2"
    c.model.norm = "layer"                   # layer norm in place of batch norm
    c.model.conv_init = "fan_in_truncated_normal"
    c.head.num_layers, c.head.hidden_dim, c.head.out_dim = 1, 0, 64   # unused: no projector
    c.optimizer.name, c.optimizer.lr_scaling = "adamw", "none"
    c.optimizer.base_lr, c.optimizer.weight_decay = 4e-4, 0.0
    c.warmup_epochs = 0.0
    c.lr_schedule = "constant"
    c.loss.temperature = 1.0                 # unused: the InfoNCE scale is emb_scale
    c.batch_size = 512
    if arg in ("imagenet_r50", "imagenet_r161"):
        c.dataset.name, c.dataset.image_size = "imagenet2012", 256
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.stem = (50 if arg == "imagenet_r50" else 161), "imagenet"
        c.cpc_v2.patch_size, c.cpc_v2.patch_stride = 64, 32
        c.num_epochs = 200.0
        c.eval.every_steps = 10000
        c.checkpoint_every_steps = 2000
        view = crop_view()
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.model.depth, c.model.stem = 18, "cifar"
        c.cpc_v2.patch_size, c.cpc_v2.patch_stride = 8, 4
        c.num_epochs = 300.0
        c.eval.every_steps = 2000
        view = crop_view(crop_area_min=0.2, normalize="cifar10")
    c.aug = ml_collections.ConfigDict(dict(view1=view, on_device=False))   # one view
    return c
