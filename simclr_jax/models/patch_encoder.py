"""An image encoder that encodes a grid of patches: image -> patches -> encoder per patch.

`grid` gives the patch features [B, G, G, D] a patch-prediction objective needs; calling the
module gives their spatial mean [B, D], what evaluation (kNN, linear, fine-tuning, export)
uses as "the features of an image". The wrapped encoder's variables sit at this module's top
level (shared scope), so its parameters keep the plain backbone's names.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.data.patch_grid import patch_grid


class PatchGridEncoder(nn.Module):
    encoder: nn.Module            # patches [N, P, P, 3] -> features [N, D]
    patch_size: int
    stride: int

    def setup(self):
        nn.share_scope(self, self.encoder)

    @property
    def num_features(self) -> int:
        return self.encoder.num_features

    def encode_patches(self, patches, train: bool):
        """[B, G, G, P, P, C] -> [B, G, G, D]: every patch folded into the batch, on its own."""
        b, g, h = patches.shape[:3]
        z = self.encoder(patches.reshape((b * g * h,) + patches.shape[3:]), train=train)
        return z.reshape(b, g, h, -1)                                     # [B, G, G, D]

    def grid(self, images, train: bool):
        """[B, S, S, 3] -> patch features [B, G, G, D]."""
        return self.encode_patches(patch_grid(images, self.patch_size, self.stride), train)

    def __call__(self, images, train: bool = False):
        """[B, S, S, 3] -> mean-pooled patch features [B, D]."""
        return jnp.mean(self.grid(images, train), axis=(1, 2))
