"""Images -> a grid of overlapping square patches, and per-patch augmentation, in JAX.

Patch-based methods (CPC v2) encode every patch of an image on its own: the grid is cut inside
the jitted step (the host ships whole crops), and each patch gets its own random flip and
colour dropping, drawn from the step's key, so the augmentation is a pure function of
(rng, images) on any device topology.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from simclr_jax.errors import UserError


def grid_size(image_size: int, patch_size: int, stride: int) -> int:
    """G = (S - P) / stride + 1 patches per side; the patches must tile S exactly."""
    if not (patch_size >= 1 and stride >= 1 and patch_size <= image_size):
        raise UserError(f"patch grid: need 1 <= patch_size <= image size and stride >= 1, got "
                        f"patch_size={patch_size}, stride={stride}, image size {image_size}")
    if (image_size - patch_size) % stride:
        raise UserError(f"patch grid: (image size {image_size} - patch_size {patch_size}) must "
                        f"be a multiple of stride {stride} so the grid covers the image exactly")
    return (image_size - patch_size) // stride + 1


def patch_grid(images: jnp.ndarray, patch_size: int, stride: int) -> jnp.ndarray:
    """[B, S, S, C] -> [B, G, G, P, P, C]; patch (i, j) is images[:, i*stride : i*stride + P,
    j*stride : j*stride + P] (rows top to bottom, columns left to right)."""
    s = images.shape[1]
    if images.shape[2] != s:
        raise UserError(f"patch grid: images must be square, got {tuple(images.shape[1:3])}")
    g = grid_size(s, patch_size, stride)
    starts = jnp.arange(g) * stride                                       # [G]
    offsets = jnp.arange(patch_size)                                      # [P]
    idx = starts[:, None] + offsets[None, :]                              # [G, P]
    rows = images[:, idx]                                                 # [B, G, P, S, C]
    grid = rows[:, :, :, idx]                                             # [B, G, P, G, P, C]
    return jnp.transpose(grid, (0, 1, 3, 2, 4, 5))                        # [B, G, G, P, P, C]


def augment_patches(rng: jax.Array, patches: jnp.ndarray, *, flip_prob: float,
                    color_drop_prob: float) -> jnp.ndarray:
    """Independent augmentation of every patch [..., P, P, 3] (the paper's patch-based
    augmentation): a horizontal flip with probability `flip_prob`, and with probability
    `color_drop_prob` colour dropping: two of the three channels, chosen uniformly (one kept),
    are set to 0 (the mean after normalisation; black without it)."""
    lead = patches.shape[:-3]                                             # [B, G, G]
    flip_rng, drop_rng, keep_rng = jax.random.split(rng, 3)
    flip = jax.random.bernoulli(flip_rng, flip_prob, lead)                # [B, G, G]
    flipped = jnp.where(flip[..., None, None, None], patches[..., :, ::-1, :], patches)
    drop = jax.random.bernoulli(drop_rng, color_drop_prob, lead)          # [B, G, G]
    keep = jax.random.randint(keep_rng, lead, 0, 3)                       # [B, G, G]
    channel_mask = jax.nn.one_hot(keep, 3, dtype=patches.dtype)           # [B, G, G, 3]
    mask = jnp.where(drop[..., None], channel_mask, 1.0)                  # [B, G, G, 3]
    return flipped * mask[..., None, None, :].astype(patches.dtype)
