"""SimCLR (v1/v2): two views through one encoder, NT-Xent over the global batch.

Both views go through the network in ONE forward pass, as in the reference, so BN statistics
are computed over all 2B views of the global batch (SimCLR's global BN).

SimCLR v2's optional memory (config.simclr.memory, left out of the official code): a momentum
(EMA) copy of the encoder+projector embeds both views; its keys are queued (MoCo machinery) and
serve as K extra negatives for every anchor. Positives stay the two online views.
"""
from __future__ import annotations

import jax.numpy as jnp

from simclr_jax import losses
from simclr_jax.methods import common
from simclr_jax.methods.network import SSLNetwork
from simclr_jax.models import build_backbone
from simclr_jax.errors import UserError


def build_network(config, num_classes: int) -> SSLNetwork:
    backbone = build_backbone(config.model)
    projector, predictor = common.build_heads(config, backbone.num_features)
    return SSLNetwork(backbone=backbone, projector=projector, predictor=predictor,
                      num_classes=num_classes if config.probe.enabled else 0,
                      knn_features=config.eval.get("knn_features", "backbone"))


def uses_memory(config) -> bool:
    return bool(config.get("simclr", {}).get("memory", False))


def validate(config, num_train_examples: int) -> None:
    if config.loss.temperature <= 0:
        raise UserError(f"loss.temperature must be > 0, got {config.loss.temperature}")
    if uses_memory(config):
        K, keys = config.simclr.memory_size, 2 * config.batch_size
        if K <= 0 or K % keys:
            raise UserError(f"simclr.memory_size={K} must be a positive multiple of 2 x batch_size"
                             f" = {keys} (both views' keys are queued each step).")
        if K > 2 * num_train_examples:
            raise UserError(f"simclr.memory_size={K} exceeds the {2 * num_train_examples} views "
                             f"of one epoch; the memory would repeat images. Lower it.")


def init_extras(config, network, variables, rng) -> dict:
    if not uses_memory(config):
        return {}
    from simclr_jax.methods import moco
    return moco.init_extras(config, network, variables, rng, config.simclr.memory_size)


def compute_loss(network, config, params, state, batch, rng):
    x = jnp.concatenate([batch["view1"], batch["view2"]], axis=0)        # [2B, H, W, 3]
    out, batch_stats = common.apply_train(network, params, state.batch_stats, x)
    z1, z2 = jnp.split(out["proj"], 2, axis=0)                           # [B, D] each
    memory = state.queue if uses_memory(config) else None
    loss, metrics = losses.nt_xent(z1, z2, config.loss.temperature, memory=memory)
    p_loss, p_metrics = common.probe_loss(out, batch["label"], num_views=2)
    metrics = {"loss": loss, **metrics, **p_metrics}
    extras = {}
    if memory is not None:
        from simclr_jax.methods import moco
        k_out, target_stats = common.apply_target(network, state, x)
        keys = losses.l2_normalize(k_out["proj"])                        # [2B, D]
        queue, ptr, filled = moco.enqueue(state.queue, state.queue_ptr, state.queue_filled, keys)
        extras = {"target_batch_stats": target_stats, "queue": queue, "queue_ptr": ptr,
                  "queue_filled": filled}
        metrics["queue_fill"] = filled / state.queue.shape[0]
    return loss + p_loss, (batch_stats, extras, metrics)


def after_update(network, config, state, total_steps):
    return common.ema_update(config, state, total_steps) if uses_memory(config) else state
