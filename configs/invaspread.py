"""InvaSpread (Ye et al., CVPR 2019): invariant and spreading instance features, in-batch softmax.

cifar10 — the official code (mangye16/Unsupervised_Embedding_Learning, demo_seen.py, README
    command `--dataset cifar --batch-t 0.1 --lr 0.03 --low-dim 128 --batch-size 128`):
    ResNet-18 with the CIFAR stem (3x3/1 conv, no max pool), a linear 128-d embedding
    L2-normalised, BatchCriterion at T 0.1 over the 2 x 128 features of each batch, SGD lr 0.03
    (not scaled with the batch) momentum 0.9 wd 5e-4 on every parameter, LR x0.1 / x0.05 / x0.01
    of 0.03 from epochs 120 / 160 / 200, 301 epochs, both views drawn with the same policy:
    RandomResizedCrop(32, scale 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.4) always, grayscale p 0.2,
    flip, CIFAR mean/std. BN over groups of 64 (the reference's per-GPU batch: DataParallel on
    the README's 4 GPUs). kNN monitor as the reference's: k 200, weights exp(s / 0.1), on the
    128-d embedding of the un-augmented training set.
    Published: CIFAR-10 kNN top-1 83.6 (paper; the code prints the best epoch's).
    Hardware: the README's command uses 4 GPUs (type and time not stated); one accelerator
    fits it (batch 128 of 32 px).
    python -m simclr_jax.main --config configs/invaspread.py:cifar10 --workdir /tmp/invaspread
cifar10_paper — the same recipe with the paper's view 1: the un-augmented image (no crop, flip
    or colour change; only the normalisation), against one augmented view (Sec. 3.2). The
    official code augments both views; no published number of its own.
    python -m simclr_jax.main --config configs/invaspread.py:cifar10_paper --workdir DIR
No ImageNet preset: the paper's experiments are CIFAR-10 and STL-10 (seen categories, kNN) and
CUB-200 / Cars-196 / Stanford Online Products (unseen categories, an ImageNet-pretrained
Inception-v1); it trains nothing on ImageNet. Differences from the official code: FIDELITY.md.
"""
from simclr_jax.config_base import base_config, with_presets
from simclr_jax.data import aug_presets

PRESETS = ("cifar10", "cifar10_paper")


def augmented_view():
    """demo_seen.py's transform_train (torchvision: bilinear, jitter then grayscale)."""
    return aug_presets.view(crop_area_min=0.2, resize_method="bilinear", antialias=True,
                            flip_prob=0.5, jitter_prob=1.0, brightness=0.4, contrast=0.4,
                            saturation=0.4, hue=0.4, grayscale_prob=0.2, blur_prob=0.0,
                            normalize="cifar10")


def unaugmented_view():
    """The whole image, resized to the view size, normalised: nothing random."""
    return aug_presets.view(crop_area_min=1.0, crop_area_max=1.0, resize_method="bilinear",
                            antialias=True, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0,
                            blur_prob=0.0, normalize="cifar10")


@with_presets(PRESETS, default="cifar10")
def get_config(arg):
    c = base_config()
    c.method = "invaspread"
    c.dataset.name, c.dataset.image_size = "cifar10", 32
    c.dataset.train_split, c.dataset.knn_train_split, c.dataset.knn_test_split = (
        "train", "train", "test")
    c.model.depth, c.model.width, c.model.stem = 18, 1.0, "cifar"
    c.model.shortcut = "on_shape_change"
    c.model.conv_init, c.model.zero_init_residual = "torchvision", False
    c.model.bn_group_size = 64
    c.head.kind, c.head.out_dim = "linear", 128
    c.loss.temperature = 0.1
    c.invaspread.negative_weight = 1.0
    c.optimizer.name, c.optimizer.base_lr, c.optimizer.lr_scaling = "sgd", 0.03, "none"
    c.optimizer.momentum, c.optimizer.nesterov = 0.9, False
    c.optimizer.weight_decay, c.optimizer.decay_all = 5e-4, True
    c.batch_size = 128
    c.num_epochs = 301.0
    c.warmup_epochs = 0.0
    c.lr_schedule = "step"
    c.lr_boundaries_epochs, c.lr_boundary_factors = (120, 160, 200), (0.1, 0.05, 0.01)
    c.eval.knn_k, c.eval.knn_temperature, c.eval.knn_features = 200, 0.1, "projection"
    c.eval.every_steps = 3900        # every 10 epochs (the reference: every epoch)
    first = unaugmented_view() if arg == "cifar10_paper" else augmented_view()
    c.aug = aug_presets.two_views(first, augmented_view())
    return c
