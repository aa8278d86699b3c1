"""SwAV (Caron et al., 2020): online clustering with swapped predictions and multi-crop.

The ImageNet presets are facebookresearch/swav's scripts/swav_*_pretrain.sh: ResNet-50
(torchvision init, no zero-init residual), projector 2048-2048(BN, ReLU)-128, L2 norm, 3000
prototypes, T 0.1, Sinkhorn eps 0.05 x 3 iterations over the global batch, codes from the two
224-px crops, each predicted from the 7 other crops; multi-crop 2 x 224 (scale 0.14-1) + 6 x 96
(scale 0.05-0.14), every crop with flip, colour distortion of strength 1 (jitter 0.8, 0.8, 0.8,
0.2 p 0.8, grayscale 0.2) and blur p 0.5 (sigma 0.1-2); LARC (SGD momentum 0.9, trust 0.001,
no clipping), wd 1e-6, the LR from the script (not scaled with the batch): np.linspace warmup
then cosine to final_lr. Published figures are linear top-1 on ImageNet (the README's table,
`eval_linear.py`).

imagenet_100ep / imagenet_200ep / imagenet_400ep / imagenet_800ep — batch 4096 (64 GPUs x 64),
    LR 4.8 -> 0.0048, 10 warmup epochs from 0.3, prototypes frozen 313 steps, no queue.
    Published: 72.1 / 73.9 / 74.6 / 75.3 (64 V100 16G, apex fp16, 3 min 40 s per epoch).
    python -m simclr_jax.main --config configs/swav.py:imagenet_800ep --workdir DIR
imagenet_bs256_200ep / imagenet_bs256_400ep — batch 256 (4 GPUs x 64), LR 0.6 -> 0.0006, no
    warmup, prototypes frozen 5005 steps, a queue of 3840 embeddings from epoch 15.
    Published: 72.7 / 74.3 (4 V100, 52 min 10 s per epoch).
    python -m simclr_jax.main --config configs/swav.py:imagenet_bs256_400ep --workdir DIR
cifar10 — the reference has NO CIFAR recipe: this is solo-learn's (vturrisi/solo-learn
    scripts/pretrain/cifar/swav.yaml + augmentations/symmetric.yaml): CIFAR ResNet-18, 2 x 32 px
    crops (scale 0.08-1, jitter 0.8/0.8/0.8/0.2 p 0.8, grayscale 0.2, blur p 0.5), projector
    2048-128, 3000 prototypes, queue 3840 from epoch 50, prototypes frozen 2 epochs, LARS
    (eta 0.02, biases and BN excluded) lr 0.6 x B/256, wd 1e-6, batch 256, 10 warmup epochs
    from 3e-5, cosine to 0, 1000 epochs. Published (solo-learn's model zoo): 89.17 linear
    top-1 (1 GPU, fp16). Differences in FIDELITY.md.
    python -m simclr_jax.main --config configs/swav.py:cifar10 --workdir DIR
"""
import copy

import ml_collections

from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_100ep", "imagenet_200ep", "imagenet_400ep", "imagenet_800ep",
           "imagenet_bs256_200ep", "imagenet_bs256_400ep", "cifar10")


def crop(scale_min: float, scale_max: float, image_size=None, normalize="imagenet"):
    """multicropdataset.py's per-crop pipeline: RandomResizedCrop (bilinear, PIL), flip,
    get_color_distortion(s=1.0), PILRandomGaussianBlur(p=0.5, radius 0.1-2), Normalize."""
    return aug_presets.view(crop_area_min=scale_min, crop_area_max=scale_max,
                            resize_method="bilinear", antialias=True, jitter_prob=0.8,
                            brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
                            grayscale_prob=0.2, blur_prob=0.5, blur_sigma_min=0.1,
                            blur_sigma_max=2.0, normalize=normalize, image_size=image_size)


def multi_crop(crops: list) -> ml_collections.ConfigDict:
    """{view1..viewV, on_device} from a list of per-crop policies (a copy each)."""
    views = {f"view{v + 1}": copy.deepcopy(c) for v, c in enumerate(crops)}
    return ml_collections.ConfigDict(dict(**views, on_device=False))


@with_presets(PRESETS, default="imagenet_800ep")
def get_config(arg):
    c = base_config()
    c.method = "swav"
    c.head.num_layers, c.head.hidden_dim, c.head.out_dim = 2, 2048, 128   # hidden_mlp, feat_dim
    c.loss.temperature = 0.1
    c.model.conv_init, c.model.zero_init_residual = "torchvision", False
    c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay = "lars", 0.9, 1e-6
    c.lr_schedule = "linspace_warmup_cosine"
    if arg == "cifar10":
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.model.depth, c.model.stem = 18, "cifar"
        c.batch_size, c.num_epochs = 256, 1000.0
        c.optimizer.base_lr, c.optimizer.lr_scaling = 0.6, "linear"
        c.optimizer.trust_coefficient, c.optimizer.lars_lr = 0.02, "after_momentum"
        c.warmup_epochs, c.lr_warmup_start, c.lr_final = 10.0, 3e-5, 0.0
        c.swav.queue_length, c.swav.epoch_queue_starts = 3840, 50
        c.swav.freeze_prototypes_niters = 2 * (50000 // 256)   # freeze_prototypes_epochs: 2
        c.eval.every_steps = 5000
        view = aug_presets.view(crop_area_min=0.08, jitter_prob=0.8, brightness=0.8,
                                contrast=0.8, saturation=0.8, hue=0.2, grayscale_prob=0.2,
                                blur_prob=0.5, resize_method="bilinear", antialias=True,
                                normalize="cifar10")
        c.aug = multi_crop([view, view])
        return c
    c.dataset.name, c.dataset.image_size = "imagenet2012", 224
    c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
    c.model.depth, c.model.stem = 50, "imagenet"
    c.optimizer.lr_scaling, c.optimizer.trust_coefficient = "none", 1e-3
    c.optimizer.name = "larc"                       # apex LARC(clip=False) around torch SGD
    c.eval.every_steps = 5000
    c.checkpoint_every_steps = 2000
    c.aug = multi_crop([crop(0.14, 1.0)] * 2 + [crop(0.05, 0.14, image_size=96)] * 6)
    if arg.startswith("imagenet_bs256_"):
        c.batch_size, c.num_epochs = 256, float(arg[len("imagenet_bs256_"):-2])
        c.optimizer.base_lr, c.lr_final = 0.6, 0.0006
        c.warmup_epochs, c.lr_warmup_start = 0.0, 0.0
        c.swav.queue_length, c.swav.epoch_queue_starts = 3840, 15
        c.swav.freeze_prototypes_niters = 5005
    else:
        c.batch_size, c.num_epochs = 4096, float(arg[len("imagenet_"):-2])
        c.optimizer.base_lr, c.lr_final = 4.8, 0.0048
        c.warmup_epochs, c.lr_warmup_start = 10.0, 0.3
        c.swav.queue_length = 0
        c.swav.freeze_prototypes_niters = 313
    return c
