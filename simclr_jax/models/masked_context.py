"""A masked (PixelCNN-style) convolutional context network over a grid of feature vectors.

Output row r depends only on input rows <= r (every column of them), so a linear map of the
context at row r may be asked to predict rows r + k without seeing them. Other prediction
directions are this network applied to the grid turned by `orient` (rows flipped, or rows and
columns swapped), as in CPC v2.

The residual block is the CPC v2 paper's pseudo-code (Henaff et al. 2020, appendix):
1x1 conv (width) -> ReLU -> 1x3 conv along the row (SAME) -> pad one row on top -> 2x1 VALID
conv (rows r-1, r) -> ReLU -> 1x1 conv (back to D), added to its input; a ReLU after the stack.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.errors import UserError

DIRECTIONS = ("top_down", "bottom_up", "left_right", "right_left")


def orient(grid: jnp.ndarray, direction: str) -> jnp.ndarray:
    """[B, H, W, ...] -> the grid turned so that `direction` reads top to bottom: "top_down"
    as is; "bottom_up" rows reversed; "left_right" rows <-> columns; "right_left" rows <->
    columns, then reversed. Row r of the result predicts row r + k of the result."""
    if direction == "top_down":
        return grid
    if direction == "bottom_up":
        return jnp.flip(grid, axis=1)
    if direction == "left_right":
        return jnp.swapaxes(grid, 1, 2)
    if direction == "right_left":
        return jnp.flip(jnp.swapaxes(grid, 1, 2), axis=1)
    raise UserError(f"prediction direction must be one of {DIRECTIONS}, got {direction!r}")


class RowCausalContextNetwork(nn.Module):
    """[B, H, W, D] -> context [B, H, W, D]; context row r sees input rows <= r only."""
    num_blocks: int = 5
    width: int = 256

    @nn.compact
    def __call__(self, z):
        d = z.shape[-1]
        c = z                                                             # [B, H, W, D]
        for i in range(self.num_blocks):
            h = nn.relu(nn.Conv(self.width, (1, 1), name=f"block{i}_in")(c))
            h = nn.Conv(self.width, (1, 3), padding=((0, 0), (1, 1)),
                        name=f"block{i}_row")(h)                          # within a row
            h = jnp.pad(h, ((0, 0), (1, 0), (0, 0), (0, 0)))              # [B, H+1, W, width]
            h = nn.relu(nn.Conv(self.width, (2, 1), padding="VALID",
                                name=f"block{i}_down")(h))                # rows r-1, r
            c = c + nn.Conv(d, (1, 1), name=f"block{i}_out")(h)           # [B, H, W, D]
        return nn.relu(c)
