"""Pieces every method shares: the online probe loss and applying the network with BN updates."""
from __future__ import annotations

import jax.numpy as jnp

from simclr_jax import losses


def apply_train(network, params, batch_stats, x, **kwargs):
    """Forward pass in training mode; returns (outputs, new batch_stats)."""
    out, mutated = network.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                 mutable=["batch_stats"], **kwargs)
    return out, mutated["batch_stats"]


def probe_loss(out: dict, labels: jnp.ndarray, num_views: int):
    """Online linear probe on stop-gradient features of every view (labels < 0 are ignored).

    The probe cannot move the backbone (its input is stop-gradient), so adding its loss to the
    method's loss only trains the probe. Returns (loss, metrics).
    """
    if "probe_logits" not in out:
        return 0.0, {}
    labels = jnp.tile(labels, num_views)                   # [V*B] views are stacked on axis 0
    mask = (labels >= 0).astype(jnp.float32)
    loss = losses.softmax_cross_entropy(out["probe_logits"], jnp.maximum(labels, 0), mask)
    correct = (jnp.argmax(out["probe_logits"], -1) == labels).astype(jnp.float32) * mask
    acc = correct.sum() / jnp.maximum(mask.sum(), 1.0)
    return loss, {"probe_loss": loss, "probe_acc": acc}
