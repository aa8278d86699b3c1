"""CMC (Tian et al., 2019): L and ab of CIE Lab as two views, one ResNet each, each view's 128-d
feature scored by NCE against a memory bank of the other view's (HobbitLong/CMC, train_CMC.py).

imagenet_r50 — the README's ResNet command (`train_CMC.py --model resnet50v1 --batch_size 128`,
    4 GPUs): two ResNet-50 at half width (stem 64 channels, stages 32..256 x 4; 12M parameters in
    all, the README's "2xResNet50half"), L on 1 channel, ab on 2; Lab normalised by train_CMC.py's
    mean/std; linear fc to 128 + L2 norm per view; NCE with K 16384 (the code's default; the
    README's flag list says 4096), T 0.07, bank momentum 0.5, Z_l / Z_ab from the first batch;
    SGD lr 0.03 at batch 128, momentum 0.9, wd 1e-4 on all parameters, 240 epochs, LR x0.1 at
    epochs 120, 160 and 200; RandomResizedCrop(224, scale 0.08-1) and flip only (no colour
    jitter: colour is what the views predict). Published: none for this model on ImageNet-1k
    (the README gives 75.8 top-1 on its ImageNet-100 subset, softmax-CE, YCbCr, 4096 negatives).
    Linear eval (LinearProbing.py --layer 6 --learning_rate 30): the pooled features of both
    encoders, concatenated (2 x 1024).
    python -m simclr_jax.main --config configs/cmc.py:imagenet_r50 --workdir DIR
imagenet_r50v2 — `--model resnet50v2`: two full-width ResNet-50 (47M). Published: linear top-1
    64.1 (MoCo paper's comparison table, R50 L+ab; not re-checked here). The released weights
    were trained with FastAutoAugment (README), which is not implemented here.
imagenet_r50v3 — `--model resnet50v3`: two ResNet-50 at width 2 (188M). Published: linear top-1
    68.4 (the README's "68.4% vs 59.3%"; SimCLR paper Table 6, "ResNet-50 (2x)", 188M params;
    not re-checked here), FastAutoAugment as above; linear eval LR 50 (README).
imagenet_r50_softmax — imagenet_r50 with `--softmax` (NCESoftmaxLoss: CE over the own row and
    K drawn rows), the loss the README recommends. No published number on ImageNet-1k.
cifar10 — NOT a reference recipe (the repository has ImageNet and ImageNet-100 only):
    train_CMC.py's settings with its ResNet-18 at half width (CIFAR stem 3x3, 64 channels),
    32 px, crop scale 0.2-1 (its default for non-ImageNet-1k data), K 4096, T 0.1 (the README's
    temperature for STL-10), batch 128, 240 epochs. No published number.
    python -m simclr_jax.main --config configs/cmc.py:cifar10 --workdir DIR
Hardware of the published runs: not stated beyond "at least 4 GPUs" (README). Each preset's
every difference from the official code: FIDELITY.md. Any preset with `,runlocal` runs on a
laptop (K shrinks to 64, the stem shrinks with the tiny encoders). The digits are grey, so their
ab view holds only Lab's rounding offset of grey, which the ab encoder's first BN amplifies into
a faint copy of the strokes: on 100 digits for 90 steps the kNN rises above the encoder at init
(tests/test_cmc.py), but that is not CMC's task of relating colour to luminance.
"""
import ml_collections

from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("imagenet_r50", "imagenet_r50v2", "imagenet_r50v3", "imagenet_r50_softmax", "cifar10")
ENCODER_WIDTH = {"imagenet_r50v2": 1.0, "imagenet_r50v3": 2.0}   # others: 0.5 ("v1")


@with_presets(PRESETS, default="imagenet_r50")
def get_config(arg):
    c = base_config()
    c.method = "cmc"
    c.head.kind, c.head.out_dim = "linear", 128            # each view's fc -> feat_dim, Normalize
    c.cmc.loss, c.cmc.num_negatives, c.cmc.bank_momentum = "nce", 16384, 0.5
    c.cmc.stem_width = 64
    c.model.width = ENCODER_WIDTH.get(arg, 0.5)            # EACH encoder's width multiplier
    c.model.conv_init, c.model.zero_init_residual = "torchvision", False
    c.optimizer.name, c.optimizer.lr_scaling = "sgd", "linear"
    c.optimizer.base_lr = 0.06                             # 0.03 at batch 128
    c.optimizer.momentum, c.optimizer.nesterov, c.optimizer.decay_all = 0.9, False, True
    c.optimizer.weight_decay = 1e-4
    c.batch_size = 128
    c.num_epochs, c.warmup_epochs = 240.0, 0.0
    c.lr_schedule, c.lr_boundaries_epochs = "step", (120, 160, 200)
    c.eval.knn_k, c.eval.knn_features = 200, "backbone"    # both views' pooled features
    if arg.startswith("imagenet"):
        c.dataset.name, c.dataset.image_size = "imagenet2012", 224
        c.dataset.knn_train_split, c.dataset.knn_test_split = "train[:10%]", "validation"
        c.model.depth, c.model.stem = 50, "imagenet"
        c.loss.temperature = 0.07
        if arg == "imagenet_r50_softmax":
            c.cmc.loss = "softmax"
        crop_area_min = 0.08                               # train_CMC.py: ImageNet ResNets
        c.eval.knn_temperature = 0.07
        c.eval.every_steps = 10000
        c.checkpoint_every_steps = 2000
    else:
        c.dataset.name, c.dataset.image_size = "cifar10", 32
        c.dataset.train_split, c.dataset.knn_train_split, c.dataset.knn_test_split = (
            "train", "train", "test")
        c.model.depth, c.model.stem = 18, "cifar"
        c.loss.temperature = 0.1
        c.cmc.num_negatives = 4096
        crop_area_min = 0.2                                # train_CMC.py's default crop_low
        c.eval.knn_temperature = 0.1
        c.eval.every_steps = 2000
    # RandomResizedCrop + RandomHorizontalFlip, then RGB2Lab (inside the network); no jitter.
    view = aug_presets.view(crop_area_min=crop_area_min, resize_method="bilinear",
                            flip_prob=0.5, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                            normalize="none")
    c.aug = ml_collections.ConfigDict(dict(view1=view, on_device=False))   # one view
    return c
