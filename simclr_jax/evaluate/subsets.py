"""Deterministic class-balanced labelled subsets for semi-supervised fine-tuning.

ImageNet has the official 1%/10% lists (TFDS imagenet2012_subset); every other dataset gets
a subset drawn here, so a run is reproducible from (labels, fraction or count, seed) alone.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from simclr_jax.errors import UserError


def _per_class_take(counts: dict, fraction, per_class) -> dict:
    """How many examples to keep from each class."""
    if (fraction is None) == (per_class is None):
        raise UserError("pass exactly one of fraction=(0, 1] or per_class=<int >= 1>.")
    if per_class is not None:
        if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
            raise UserError(f"per_class must be an integer >= 1, got {per_class!r}.")
        short = {c: n for c, n in counts.items() if n < per_class}
        if short:
            raise UserError(
                f"per_class={per_class} but these classes have fewer examples "
                f"(class: count) {short}; lower per_class or use fraction=.")
        return {c: int(per_class) for c in counts}
    if not isinstance(fraction, (int, float, np.floating, np.integer)) or isinstance(
            fraction, bool) or not 0.0 < float(fraction) <= 1.0:
        raise UserError(
            f"fraction must be a number in (0, 1], got {fraction!r}; "
            "e.g. 0.01 for a 1% subset, 0.1 for 10%.")
    # Round half up (0.5 -> 1, 4.5 -> 5), not Python's round-half-to-even, and never 0.
    # Exact arithmetic on the decimal the user wrote: 0.29 * 50 is 14.5 (-> 15), whereas in
    # binary floating point it is 14.499999... and would round down.
    exact = Fraction(repr(float(fraction)))
    return {c: max(1, math.floor(exact * n + Fraction(1, 2))) for c, n in counts.items()}


def class_balanced_subset(labels, fraction: float | None = None, *, per_class: int | None = None,
                          seed: int = 0) -> np.ndarray:
    """Sorted np.int64 indices into `labels` of a class-balanced subset.

    Each class c with n_c examples contributes exactly max(1, floor(fraction * n_c + 0.5))
    examples (round half up, at least one; computed exactly from fraction's shortest decimal
    form, so 0.29 * 50 = 14.5 -> 15), or exactly `per_class` examples. Within class c
    the examples are the first ones of a permutation drawn from
    np.random.default_rng([seed, c]), so:
      * the same (labels, fraction, seed) always gives the same subset, on any machine;
      * a class's choice does not depend on which other classes exist;
      * with a fixed seed, a smaller fraction gives a subset of a larger one (1% within 10%).
    labels: 1-D non-negative integer class ids [N] (drop unlabelled -1 examples first).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}.")
    if labels.min() < 0:
        raise UserError(
            f"labels must be >= 0, found {labels.min()}; drop unlabelled (-1) examples first.")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}.")
    classes, counts = np.unique(labels, return_counts=True)
    take = _per_class_take(dict(zip(classes.tolist(), counts.tolist())), fraction, per_class)
    chosen = []
    for c in classes.tolist():
        members = np.flatnonzero(labels == c)  # [n_c] ascending
        order = np.random.default_rng([int(seed), c]).permutation(members.size)
        chosen.append(members[order[:take[c]]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
