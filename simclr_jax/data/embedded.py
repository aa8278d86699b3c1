"""The embedded "digits" dataset: scikit-learn's 1,797 handwritten digits, no download needed.

It exists so a quickstart, the tests and a CPU smoke run have real labelled images offline.
Each 8x8 image holds counts 0..16 of "on" pixels in 4x4 blocks of an original 32x32 bitmap, so
we scale to 0..255 and upsample x4 back to 32x32 BILINEARLY: that approximates the smooth strokes
of the original bitmap, whereas nearest-neighbour would leave a 4-pixel block grid whose edges
crops and resizes turn into artificial high-frequency texture. No extra blur is needed. The gray
image is replicated to 3 channels so every model and augmentation sees RGB.
"""
from __future__ import annotations

import numpy as np
from simclr_jax.errors import UserError

NUM_CLASSES = 10
IMAGE_SIZE = 32
TRAIN_FRACTION = 0.8
_SPLIT_SEED = 0


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 examples: (uint8 [1797, 32, 32, 3], int32 [1797])."""
    from sklearn.datasets import load_digits  # ships with scikit-learn, no network

    data = load_digits()
    small = data.images.astype(np.float64) * (255.0 / 16.0)                   # [N, 8, 8]
    big = _upsample_bilinear(small, IMAGE_SIZE // small.shape[1])             # [N, 32, 32]
    gray = np.clip(np.round(big), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), data.target.astype(np.int32)


def _upsample_bilinear(x: np.ndarray, factor: int) -> np.ndarray:
    """[N, h, w] -> [N, h*f, w*f]: half-pixel-centred bilinear, edges clamped (like
    tf.image.resize / PIL). Separable: interpolate rows then columns."""
    def axis_weights(n: int):
        centres = (np.arange(n * factor) + 0.5) / factor - 0.5                # source coords
        centres = np.clip(centres, 0, n - 1)
        lo = np.floor(centres).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, centres - lo

    lo, hi, t = axis_weights(x.shape[1])
    x = x[:, lo, :] * (1 - t)[None, :, None] + x[:, hi, :] * t[None, :, None]
    lo, hi, t = axis_weights(x.shape[2])
    return x[:, :, lo] * (1 - t)[None, None, :] + x[:, :, hi] * t[None, None, :]


def digits_split_indices(split: str, labels: np.ndarray) -> np.ndarray:
    """Indices of "train" (first 80% of each class under a fixed permutation), "test" (the
    rest) or "all", in increasing order. Class-balanced and identical on every machine."""
    if split == "all":
        return np.arange(len(labels))
    if split not in ("train", "test"):
        raise UserError(f"digits has splits 'train', 'test' and 'all', not {split!r}.")
    rng = np.random.default_rng(_SPLIT_SEED)
    chosen = []
    for c in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(TRAIN_FRACTION * len(members)))
        chosen.append(members[:n_train] if split == "train" else members[n_train:])
    return np.sort(np.concatenate(chosen))
