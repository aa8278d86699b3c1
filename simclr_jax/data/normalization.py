"""Per-channel input normalisation, one table for the host pipeline, the device augmentation,
exported encoders and the images shown in TensorBoard.

"none": SimCLR and BYOL feed [0, 1] pixels; "imagenet": torchvision's mean/std (MoCo);
"cifar10": the MoCo CIFAR-10 colab's transforms.Normalize.
"""
from __future__ import annotations

import numpy as np

from simclr_jax.errors import UserError

MEAN_STD = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}
CHOICES = ("none", *MEAN_STD)


def mean_std(how: str):
    """(mean [3], std [3]) float32 numpy arrays, or None for "none"."""
    if how == "none":
        return None
    if how not in MEAN_STD:
        raise UserError(f"normalize={how!r}; use one of {', '.join(map(repr, CHOICES))}.")
    mean, std = MEAN_STD[how]
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def normalize(x, how: str):
    """[..., 3] pixels in [0, 1] -> normalised (numpy, jax and TF tensors alike)."""
    stats = mean_std(how)
    return x if stats is None else (x - stats[0]) / stats[1]


def denormalize(x, how: str):
    """The inverse of `normalize`: back to [0, 1] pixels for display."""
    stats = mean_std(how)
    return x if stats is None else x * stats[1] + stats[0]
