"""MoCo v1/v2 (He et al., 2020; Chen et al., 2020): momentum key encoder + a queue of keys.

Query = online network on view 1; key = EMA target on view 2 (no gradient); InfoNCE over the
positive key and the K keys in the queue; then the global batch of keys is enqueued (FIFO).
"Shuffle BN": with BN over groups of `model.bn_group_size` examples (the per-GPU BN of the
reference), the whole global key batch goes through the key encoder in a uniformly random order
and is un-permuted after, so a key's BN statistics come from other examples than its query's.
`moco.symmetric` (the CIFAR-10 colab's option): loss_12 + loss_21, both views' keys enqueued.
The queue and its pointer live in the TrainState, on the devices.
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
                      num_classes=num_classes if config.probe.enabled else 0,
                      knn_features=config.eval.get("knn_features", "backbone"))


def validate(config, num_train_examples: int) -> None:
    K, B = config.moco.queue_size, config.batch_size
    keys = 2 * B if symmetric(config) else B
    need = (f"2 x batch_size={keys} (moco.symmetric enqueues the keys of both views)"
            if symmetric(config) else f"batch_size={B}")
    if K <= 0 or K % keys:
        raise UserError(f"moco.queue_size={K} must be a positive multiple of {need} (the whole "
                         f"global batch of keys is enqueued each step); e.g. "
                         f"--config.moco.queue_size={max(keys, (K // keys) * keys)}.")
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


def init_extras(config, network, variables, rng, queue_size: int | None = None) -> dict:
    """EMA target + a queue of `queue_size` (default moco.queue_size) random unit keys."""
    dim = config.head.out_dim
    queue_size = config.moco.queue_size if queue_size is None else queue_size
    queue = jax.random.normal(rng, (queue_size, dim), jnp.float32)
    queue = queue / jnp.linalg.norm(queue, axis=1, keepdims=True)       # [K, D]
    return {**common.init_target(variables), "queue": queue,
            "queue_ptr": jnp.zeros((), jnp.int32), "queue_filled": jnp.zeros((), jnp.int32)}


def batch_shuffle(rng, batch_size: int):
    """A uniformly random permutation of the whole global key batch and its inverse.

    The reference's `torch.randperm` over all GPUs: with BN over groups, the key of example i is
    then normalised with statistics of a random set of other examples, not with those of its
    query's group (the leak shuffle BN blocks). A function of `rng` only, so every device count
    draws the same permutation. Returns (perm, inverse): shuffled = x[perm], x == shuffled[inverse].
    """
    perm = jax.random.permutation(rng, batch_size)                       # [B]
    return perm, jnp.argsort(perm)


def enqueue(queue, ptr, filled, keys):
    """FIFO write of the global batch of keys at ptr; ptr <- (ptr + B) % K."""
    K, B = queue.shape[0], keys.shape[0]
    queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (ptr, 0))
    return queue, (ptr + B) % K, jnp.minimum(filled + B, K)


def symmetric(config) -> bool:
    """The colab's symmetric option: both views are queries, both are keys (2B keys queued)."""
    return bool(config.moco.get("symmetric", False))


def key_features(network, config, state, x, rng):
    """L2-normalised keys [B, D] of images x in their original order, and the target's new BN
    statistics. With shuffle BN the key encoder sees the batch in a random order."""
    if config.moco.shuffle_bn:
        perm, inverse = batch_shuffle(rng, x.shape[0])
        out, target_stats = common.apply_target(network, state, x[perm])
        k = out["proj"][inverse]                                         # [B, D] original order
    else:
        out, target_stats = common.apply_target(network, state, x)
        k = out["proj"]
    return losses.l2_normalize(k), target_stats


def compute_loss(network, config, params, state, batch, rng):
    T = config.loss.temperature
    rng_12, rng_21 = jax.random.split(rng)
    q_out, batch_stats = common.apply_train(network, params, state.batch_stats, batch["view1"])
    k2, target_stats = key_features(network, config, state, batch["view2"], rng_12)
    loss, metrics = losses.infonce_queue(q_out["proj"], k2, state.queue, T)
    keys = k2                                                            # [B, D]
    if symmetric(config):                                                # colab: loss_12 + loss_21
        q2_out, batch_stats = common.apply_train(network, params, batch_stats, batch["view2"])
        k1, target_stats = key_features(network, config,
                                        state.replace(target_batch_stats=target_stats),
                                        batch["view1"], rng_21)
        loss_21, metrics_21 = losses.infonce_queue(q2_out["proj"], k1, state.queue, T)
        loss = loss + loss_21
        metrics = {name: (metrics[name] + metrics_21[name]) / 2 for name in metrics}
        keys = jnp.concatenate([k1, k2], axis=0)                         # [2B, D]
    queue, ptr, filled = enqueue(state.queue, state.queue_ptr, state.queue_filled,
                                 jax.lax.stop_gradient(keys))
    p_loss, p_metrics = common.probe_loss(q_out, batch["label"], num_views=1)
    metrics = {"loss": loss, **metrics, **p_metrics,
               "queue_fill": filled / state.queue.shape[0]}
    extras = {"target_batch_stats": target_stats, "queue": queue, "queue_ptr": ptr,
              "queue_filled": filled}
    return loss + p_loss, (batch_stats, extras, metrics)


after_update = common.ema_after_update
