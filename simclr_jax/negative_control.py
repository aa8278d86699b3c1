"""A negative control for learning checks: the batch with every positive pair broken.

A learning check ("the kNN beats the encoder at init") can pass for reasons that have nothing
to do with what a method learns from its pairs: BN statistics of the training crops, any weight
motion, negatives pushed apart. Run with `break_positive_pairs` the same recipe has no positive
pair left: view k of row r is view k of row r - k (k = 0 for view1), and the example index that
memory banks read their positive from is row r - V's (V views), so no two of them share an
image when the batch has more than V rows. A check that this run also passes does not show
learning (BENCHMARKS.md, "Negative controls").
"""
from __future__ import annotations

import jax.numpy as jnp


def break_positive_pairs(batch: dict, view_names: list) -> dict:
    """batch with view k rolled by k rows ([B, H, W, C] each) and `index` [B] by V rows: no row
    keeps two views, or a view and a bank row, of one image. A permutation: nothing is lost."""
    V, B = len(view_names), batch[view_names[0]].shape[0]
    if B <= V:
        raise ValueError(f"break_positive_pairs needs more rows than views: batch {B}, {V} views")
    out = dict(batch)
    for k, name in enumerate(view_names):
        if k:
            out[name] = jnp.roll(batch[name], k, axis=0)
    if "index" in batch:
        out["index"] = jnp.roll(batch["index"], V, axis=0)
    return out
