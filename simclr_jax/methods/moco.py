"""MoCo v1/v2 (He et al., 2020; Chen et al., 2020): momentum key encoder + a queue of keys.

Query = online network on view 1; key = EMA target on view 2 (no gradient); InfoNCE over the
positive key and the K keys in the queue; then the global batch of keys is enqueued (FIFO).
"Shuffle BN": with BN over groups of `model.bn_group_size` examples (the per-GPU BN of the
reference), the key batch is permuted so that no key is computed in the BN group of its query,
then un-permuted. The queue and its pointer live in the TrainState, on the devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from simclr_jax import losses
from simclr_jax.methods import common
from simclr_jax.methods.network import SSLNetwork
from simclr_jax.models import build_backbone
from simclr_jax.errors import UserError


def build_network(config, num_classes: int) -> SSLNetwork:
    backbone = build_backbone(config.model)
    projector, _ = common.build_heads(config, backbone.num_features)
    return SSLNetwork(backbone=backbone, projector=projector,
                      num_classes=num_classes if config.probe.enabled else 0)


def validate(config, num_train_examples: int) -> None:
    K, B = config.moco.queue_size, config.batch_size
    if K <= 0 or K % B:
        raise UserError(f"moco.queue_size={K} must be a positive multiple of batch_size={B} "
                         f"(the whole global batch of keys is enqueued each step); e.g. "
                         f"--config.moco.queue_size={max(B, (K // B) * B)}.")
    if K > num_train_examples:
        raise UserError(f"moco.queue_size={K} is larger than the training set "
                         f"({num_train_examples} images): the queue would hold keys of the same "
                         f"image several times. Use at most {num_train_examples // B * B}.")
    if config.loss.temperature <= 0:
        raise UserError(f"loss.temperature must be > 0, got {config.loss.temperature}")
    group = config.model.get("bn_group_size")
    if config.moco.shuffle_bn and (group is None or group >= B):
        raise UserError("moco.shuffle_bn=True needs BN over groups smaller than the batch: set "
                         f"--config.model.bn_group_size (e.g. 32) below batch_size={B}, or "
                         "--config.moco.shuffle_bn=False for global BN.")


def init_extras(config, network, variables, rng) -> dict:
    dim = config.head.out_dim
    queue = jax.random.normal(rng, (config.moco.queue_size, dim), jnp.float32)
    queue = queue / jnp.linalg.norm(queue, axis=1, keepdims=True)       # [K, D]
    return {**common.init_target(variables), "queue": queue,
            "queue_ptr": jnp.zeros((), jnp.int32), "queue_filled": jnp.zeros((), jnp.int32)}


def group_derangement(rng, batch_size: int, group_size: int):
    """A random permutation of [B] under which every example lands in a different BN group.

    Groups are mapped by a random derangement (a random relabelling of a cyclic shift by
    s in [1, G-1]); examples are shuffled within groups. Returns (perm, inverse) with
    shuffled = x[perm] and x == shuffled[inverse].
    """
    G = batch_size // group_size
    k_sigma, k_shift, k_within = jax.random.split(rng, 3)
    sigma = jax.random.permutation(k_sigma, G)                           # [G]
    inv_sigma = jnp.argsort(sigma)
    shift = jax.random.randint(k_shift, (), 1, G)
    src_group = inv_sigma[(sigma + shift) % G]                           # [G], never the identity
    within = jax.vmap(lambda k: jax.random.permutation(k, group_size))(
        jax.random.split(k_within, G))                                   # [G, g]
    perm = (src_group[:, None] * group_size + within).reshape(-1)        # [B]
    return perm, jnp.argsort(perm)


def enqueue(queue, ptr, filled, keys):
    """FIFO write of the global batch of keys at ptr; ptr <- (ptr + B) % K."""
    K, B = queue.shape[0], keys.shape[0]
    queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (ptr, 0))
    return queue, (ptr + B) % K, jnp.minimum(filled + B, K)


def compute_loss(network, config, params, state, batch, rng):
    q_out, batch_stats = common.apply_train(network, params, state.batch_stats, batch["view1"])
    x_k = batch["view2"]                                                 # [B, H, W, 3]
    if config.moco.shuffle_bn:
        perm, inverse = group_derangement(rng, x_k.shape[0], config.model.bn_group_size)
        k_out, target_stats = common.apply_target(network, state, x_k[perm])
        k = k_out["proj"][inverse]                                       # [B, D] original order
    else:
        k_out, target_stats = common.apply_target(network, state, x_k)
        k = k_out["proj"]
    k = k / jnp.linalg.norm(k, axis=1, keepdims=True).clip(1e-12)
    loss, metrics = losses.infonce_queue(q_out["proj"], k, state.queue, config.loss.temperature)
    queue, ptr, filled = enqueue(state.queue, state.queue_ptr, state.queue_filled,
                                 jax.lax.stop_gradient(k))
    p_loss, p_metrics = common.probe_loss(q_out, batch["label"], num_views=1)
    metrics = {"contrastive_loss": loss, **metrics, **p_metrics,
               "queue_fill": filled / state.queue.shape[0]}
    extras = {"target_batch_stats": target_stats, "queue": queue, "queue_ptr": ptr,
              "queue_filled": filled}
    return loss + p_loss, (batch_stats, extras, metrics)


def after_update(network, config, state, total_steps):
    return common.ema_update(config, state, total_steps)
