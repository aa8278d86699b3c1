"""DINO (Caron et al., 2021): self-distillation of an EMA teacher into a student, multi-crop.

Every preset: facebookresearch/dino main_dino.py's defaults unless its command says otherwise:
DINOHead 3 layers (2048 hidden, GELU, 256 bottleneck, L2-normalised, weight-normalised last layer
out_dim 65536), student temperature 0.1, centre momentum 0.9, teacher EMA 0.996 -> 1 (cosine,
per step), the last layer frozen for the first epoch, per-tensor gradient clipping at 3.0, LR
x B/256 with 10 linear warmup epochs then a cosine to min_lr 1e-6 (`lr_final`) (`utils.cosine_scheduler`),
weight decay off for biases and norm parameters (`get_params_groups`). Views: 2 global crops
(224 px, view1 blur 1.0; view2 blur 0.1 + solarize 0.2) and `--local_crops_number` 8 local crops
(96 px, blur 0.5), colour jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, flip, bicubic
(`DataAugmentationDINO`). The evaluated encoder is the teacher's backbone; the ImageNet presets'
kNN monitor is eval_knn.py's 20-NN at temperature 0.07 (on 10% of train, not all of it).

vit_small — the README's "Boosting DINO performance" full command: ViT-S/16 (6 heads, learned
    position embedding), 300 epochs, --teacher_temp 0.07 --warmup_teacher_temp_epochs 30
    --norm_last_layer false, run_with_submitit's 2 nodes x 8 GPUs x 64 = batch 1024, AdamW lr
    0.0005 x B/256, weight decay 0.04 -> 0.4 (cosine), drop path 0.1 (see FIDELITY.md).
    Published: 76.0 linear / 73.3 kNN for this command (README, "2.6 days with 16 GPUs"); the
    released ViT-S/16 (77.0 linear / 74.5 kNN) was trained with the args.txt the README links
    to (not in the repository).
    python -m simclr_jax.main --config configs/dino.py:vit_small --workdir DIR
vit_base — the README's ViT-B command (run_with_submitit --nodes 2 --ngpus 8 --use_volta32
    --arch vit_base): main_dino.py's defaults, 100 epochs, teacher temperature 0.04, last layer
    weight-normalised, batch 1024 on 16 V100-32GB. Published: the released ViT-B/16, 78.2
    linear / 76.1 kNN (trained with its linked args.txt, not in the repository).
    python -m simclr_jax.main --config configs/dino.py:vit_base --workdir DIR
resnet50 — the README's ResNet-50 command (8 GPUs x 64 = batch 512, 100 epochs): --optimizer sgd
    --lr 0.03 --weight_decay 1e-4 --weight_decay_end 1e-4 --global_crops_scale 0.14 1
    --local_crops_scale 0.05 0.14; torchvision ResNet-50, synchronised BN, teacher temperature
    0.04. Published: the released ResNet-50, 75.3 linear / 67.5 kNN (README table; the command's
    own run gives logs, no number).
    python -m simclr_jax.main --config configs/dino.py:resnet50 --workdir DIR
cifar10 — the reference has no CIFAR recipe; this is solo-learn's
    (scripts/pretrain/cifar/dino.yaml): CIFAR ResNet-18, batch 256, 1000 epochs, LARS lr 0.3
    (eta 0.02, biases and norms excluded), weight decay 1e-6, 10 warmup epochs then cosine,
    head 2048 / 256 / 4096 prototypes, teacher EMA 0.9995 -> 1, teacher temperature 0.07 from
    the start, no gradient clipping, two 32 px crops, no multi-crop (asymmetric.yaml: no blur,
    solarize 0.2 on the second). Published: 89.52 top-1 (solo-learn README, 1 GPU).
    python -m simclr_jax.main --config configs/dino.py:cifar10 --workdir DIR
"""
import ml_collections
from ml_collections import config_dict

from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("vit_small", "vit_base", "resnet50", "cifar10")


def crop(scale, blur_prob: float, solarize_prob: float = 0.0, image_size=None,
         normalize: str = "imagenet"):
    """One DataAugmentationDINO transform: RandomResizedCrop(scale, BICUBIC), flip, colour
    jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, GaussianBlur(p, 0.1-2), Solarization(p)."""
    return aug_presets.view(crop_area_min=scale[0], crop_area_max=scale[1],
                            resize_method="bicubic", antialias=True, jitter_prob=0.8,
                            brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                            grayscale_prob=0.2, blur_prob=blur_prob, solarize_prob=solarize_prob,
                            normalize=normalize, image_size=image_size)


def multi_crop(global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), local_crops: int = 8,
               local_size: int = 96) -> ml_collections.ConfigDict:
    """view1, view2: the global crops (dataset.image_size); view3..: the local crops."""
    views = {"view1": crop(global_scale, 1.0), "view2": crop(global_scale, 0.1, 0.2)}
    for i in range(local_crops):
        views[f"view{3 + i}"] = crop(local_scale, 0.5, image_size=local_size)
    return ml_collections.ConfigDict({**views, "on_device": False})


@with_presets(PRESETS, default="vit_small")
def get_config(arg):
    c = base_config()
    c.method = "dino"
    c.ema.base, c.ema.schedule = 0.996, "cosine"          # --momentum_teacher, cosine to 1
    c.optimizer.lr_scaling, c.optimizer.decay_all = "linear", False   # get_params_groups
    c.optimizer.grad_clip_per_param = 3.0                 # --clip_grad (utils.clip_gradients)
    c.lr_schedule, c.lr_final, c.warmup_epochs = "linspace_warmup_cosine", 1e-6, 10.0
    c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
    c.dataset.name, c.dataset.image_size = "imagenet2012", 224
    c.eval.every_steps, c.checkpoint_every_steps = 10000, 2000
    c.eval.knn_k, c.eval.knn_temperature = 20, 0.07      # eval_knn.py: the README's 20-NN
    if arg in ("vit_small", "vit_base"):
        c.model.name, c.model.patch_size = "vit", 16
        c.model.variant = "small" if arg == "vit_small" else "base"
        c.model.pos_embed = "learned"                     # timm's, interpolated for 96 px
        c.model.num_heads = config_dict.placeholder(int)
        c.model.num_heads = 6 if arg == "vit_small" else 12   # DeiT-S has 6, ViT-B 12
        c.model.drop_path_rate = 0.1                      # --drop_path_rate (the student)
        c.optimizer.name, c.optimizer.base_lr = "adamw", 0.0005
        c.optimizer.weight_decay, c.optimizer.weight_decay_end = 0.04, 0.4
        c.batch_size = 1024                               # 2 nodes x 8 GPUs x 64
        c.aug = multi_crop()
        if arg == "vit_small":
            c.num_epochs = 300.0
            c.dino.teacher_temp, c.dino.warmup_teacher_temp_epochs = 0.07, 30
            c.dino.norm_last_layer = False
        else:
            c.num_epochs = 100.0
    elif arg == "resnet50":
        c.model.name, c.model.depth, c.model.stem = "resnet", 50, "imagenet"
        c.model.conv_init, c.model.zero_init_residual = "torchvision", False
        c.optimizer.name, c.optimizer.base_lr = "sgd", 0.03
        c.optimizer.momentum, c.optimizer.nesterov = 0.9, False
        c.optimizer.weight_decay, c.optimizer.weight_decay_end = 1e-4, 1e-4
        c.batch_size, c.num_epochs = 512, 100.0            # 8 GPUs x 64
        c.aug = multi_crop(global_scale=(0.14, 1.0), local_scale=(0.05, 0.14))
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train", "test"
        c.model.name, c.model.depth, c.model.stem = "resnet", 18, "cifar"
        c.model.conv_init, c.model.zero_init_residual = "torchvision", False   # its resnet18
        c.dino.out_dim, c.dino.hidden_dim, c.dino.bottleneck_dim = 4096, 2048, 256
        c.dino.teacher_temp, c.dino.warmup_teacher_temp_epochs = 0.07, 0
        c.ema.base = 0.9995                               # base_tau
        c.optimizer.name, c.optimizer.base_lr, c.optimizer.lr_scaling = "lars", 0.3, "none"
        c.optimizer.trust_coefficient, c.optimizer.weight_decay = 0.02, 1e-6
        c.optimizer.momentum, c.optimizer.lars_lr = 0.9, "after_momentum"  # torch SGD's buffer
        c.optimizer.grad_clip_per_param = None            # clip_grad 0
        c.lr_schedule, c.lr_final, c.warmup_epochs = "cosine", 0.0, 10.0    # warmup_cosine
        c.batch_size, c.num_epochs = 256, 1000.0
        c.probe.lr_multiplier = 0.1 / 0.3                 # classifier_lr 0.1 (plain SGD there too)
        c.eval.every_steps, c.eval.knn_k, c.eval.knn_temperature = 2000, 200, 0.1
        first = crop((0.08, 1.0), 0.0, normalize="cifar10")
        second = crop((0.08, 1.0), 0.0, 0.2, normalize="cifar10")
        c.aug = aug_presets.two_views(first, second)
    return c
