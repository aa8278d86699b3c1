"""Pieces several methods share: the forward pass with BN updates, the online probe, the EMA
(momentum) target network, and the network builder of the projector/predictor methods."""
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


# ----------------------------------------------------------------------------- network

def build_ssl_network(config, num_classes: int, *, needs_predictor: bool = False,
                      method_name: str = ""):
    """backbone -> projector (-> predictor) from config.model / head / predictor."""
    from simclr_jax.methods.network import SSLNetwork
    from simclr_jax.models import build_backbone, heads

    backbone = build_backbone(config.model)
    projector, predictor = heads.build_heads(config.head, config.predictor,
                                             backbone.num_features,
                                             config.model.get("bn_group_size"))
    if needs_predictor and predictor is None:
        raise UserError(f"method {method_name} needs a predictor, which head.kind="
                        f"{config.head.kind!r} does not have: set --config.head.kind to "
                        f"bn_mlp_nonaffine or bn_mlp_biased (or use the method's config file).")
    if not needs_predictor:
        predictor = None
    return SSLNetwork(backbone=backbone, projector=projector, predictor=predictor,
                      num_classes=num_classes if config.probe.enabled else 0)


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
    """After optimizer step k: target <- m * target + (1 - m) * online (parameters only).

    m = m_k by default: BYOL updates the target right after optimizer step k with tau_k (MoCo
    v1/v2's constant m makes the timing moot: their update at the start of the next forward
    pass uses the same online parameters). `momentum_of_next_step=True` gives m_{k+1}: MoCo v3
    computes the momentum of iteration k+1 and updates the key encoder just before its keys.
    Returns (state, {"ema_momentum": the m applied}).
    """
    from simclr_jax.state import ema
    k = state.step if momentum_of_next_step else state.step - 1     # state.step = k + 1 here
    m = ema_momentum(config, k, total_steps)
    ms = state.method_state
    target = ema(ms["target_params"], target_subtree(state.params), m)
    return state.replace(method_state={**ms, "target_params": target}), {"ema_momentum": m}


def apply_target(network, method_state, x):
    """Target forward pass in training mode (its BN uses batch statistics, as in the references);
    returns (outputs, new method_state with the target's BN statistics). No gradient flows."""
    out, mutated = network.apply({"params": method_state["target_params"],
                                  "batch_stats": method_state["target_batch_stats"]}, x,
                                 train=True, use_predictor=False, use_probe=False,
                                 mutable=["batch_stats"])
    return (jax.tree.map(jax.lax.stop_gradient, out),
            {**method_state, "target_batch_stats": mutated["batch_stats"]})
