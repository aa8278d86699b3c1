"""Pieces every method shares: the online probe loss and applying the network with BN updates."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from simclr_jax import losses
from simclr_jax.errors import UserError


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


# ----------------------------------------------------------------------------- heads

def build_heads(config, num_features: int):
    """(projector, predictor or None) for config.head.kind; sizes from config.head / predictor."""
    from simclr_jax.models import heads  # local: models import flax only

    h, kind = config.head, config.head.get("kind", "simclr")
    hidden = h.hidden_dim if h.hidden_dim > 0 else num_features
    group = config.model.get("bn_group_size")
    if kind == "simclr":
        return heads.simclr_projector(num_layers=h.num_layers, hidden_dim=hidden,
                                      out_dim=h.out_dim, bn_group_size=group), None
    if kind == "moco_v1":
        return heads.moco_v1_head(out_dim=h.out_dim), None
    if kind == "moco_v2":
        return heads.moco_v2_head(hidden_dim=hidden, out_dim=h.out_dim), None
    p = config.predictor
    if kind == "moco_v3":
        return (heads.moco_v3_projector(hidden_dim=hidden, out_dim=h.out_dim,
                                        num_layers=h.num_layers, bn_group_size=group),
                heads.moco_v3_predictor(hidden_dim=p.hidden_dim, out_dim=h.out_dim,
                                        last_bn=p.get("last_bn", False), bn_group_size=group))
    if kind == "byol":
        return (heads.byol_projector(hidden_dim=hidden, out_dim=h.out_dim, bn_group_size=group),
                heads.byol_predictor(hidden_dim=p.hidden_dim, out_dim=h.out_dim,
                                     bn_group_size=group))
    raise UserError(f"unknown head.kind {kind!r}; valid: simclr, moco_v1, moco_v2, moco_v3, byol")


# ----------------------------------------------------------------------------- momentum target

TARGET_KEYS = ("backbone", "projector")


def target_subtree(params) -> dict:
    """The parts of the online network the EMA target mirrors (no predictor, no probe)."""
    return {k: params[k] for k in TARGET_KEYS if k in params}


def init_target(variables) -> dict:
    """Target starts as an exact copy of the online backbone+projector (and its BN stats)."""
    params = target_subtree(variables["params"])
    stats = target_subtree(variables.get("batch_stats", {}))
    return {"target_params": jax.tree.map(jnp.array, params),
            "target_batch_stats": jax.tree.map(jnp.array, stats)}


def ema_momentum(config, step, total_steps):
    from simclr_jax import optim
    return optim.ema_momentum(step, total_steps, config.ema.base, config.ema.schedule)


def ema_update(config, state, total_steps, momentum_of_next_step: bool = False):
    """After the optimizer step k: target <- m * target + (1 - m) * online (parameters only).

    m = m_k by default: BYOL updates the target right after optimizer step k with tau_k (MoCo
    v1/v2's constant m makes the timing moot: their update at the start of the next forward
    pass uses the same online parameters). `momentum_of_next_step=True` gives m_{k+1}: MoCo v3
    computes the momentum of iteration k+1 and updates the key encoder just before its keys.
    """
    from simclr_jax.state import ema
    k = state.step if momentum_of_next_step else state.step - 1     # state.step = k + 1 here
    m = ema_momentum(config, k, total_steps)
    return state.replace(target_params=ema(state.target_params, target_subtree(state.params), m))


def ema_after_update(network, config, state, total_steps):
    """`after_update` of the methods whose target follows the online network with m_k."""
    return ema_update(config, state, total_steps)


def apply_target(network, state, x):
    """Target forward pass in training mode (its BN uses batch statistics, as in the references);
    returns (outputs, new target batch_stats). No gradient flows: callers stop_gradient."""
    out, mutated = network.apply({"params": state.target_params,
                                  "batch_stats": state.target_batch_stats}, x, train=True,
                                 use_predictor=False, use_probe=False, mutable=["batch_stats"])
    return jax.tree.map(jax.lax.stop_gradient, out), mutated["batch_stats"]
