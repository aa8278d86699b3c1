"""SimCLR (v1/v2): two views through one encoder, NT-Xent over the global batch.

Both views go through the network in ONE forward pass, as in the reference, so BN statistics
are computed over all 2B views of the global batch (SimCLR's global BN).
"""
from __future__ import annotations

import jax.numpy as jnp

from simclr_jax import losses
from simclr_jax.methods import common
from simclr_jax.methods.network import SSLNetwork
from simclr_jax.models import build_backbone


def build_network(config, num_classes: int) -> SSLNetwork:
    backbone = build_backbone(config.model)
    projector, predictor = common.build_heads(config, backbone.num_features)
    return SSLNetwork(backbone=backbone, projector=projector, predictor=predictor,
                      num_classes=num_classes if config.probe.enabled else 0)


def validate(config, num_train_examples: int) -> None:
    if config.loss.temperature <= 0:
        raise ValueError(f"loss.temperature must be > 0, got {config.loss.temperature}")


def init_extras(config, network, variables, rng) -> dict:
    return {}


def compute_loss(network, config, params, state, batch, rng):
    x = jnp.concatenate([batch["view1"], batch["view2"]], axis=0)        # [2B, H, W, 3]
    out, batch_stats = common.apply_train(network, params, state.batch_stats, x)
    z1, z2 = jnp.split(out["proj"], 2, axis=0)                           # [B, D] each
    loss, metrics = losses.nt_xent(z1, z2, config.loss.temperature)
    p_loss, p_metrics = common.probe_loss(out, batch["label"], num_views=2)
    metrics = {"contrastive_loss": loss, **metrics, **p_metrics}
    return loss + p_loss, (batch_stats, {}, metrics)


def after_update(network, config, state, total_steps):
    return state
