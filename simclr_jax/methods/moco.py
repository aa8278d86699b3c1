"""MoCo v1/v2 (He et al., 2020; Chen et al., 2020): momentum key encoder + a queue of keys.

Query = online network on view 1; key = EMA target on view 2 (no gradient); InfoNCE over the
positive key and the K keys in the queue; then the global batch of keys is enqueued (FIFO).
"Shuffle BN": with BN over groups of `model.bn_group_size` examples (the per-GPU BN of the
reference), the whole global key batch goes through the key encoder in a uniformly random order
and is un-permuted after, so a key's BN statistics come from other examples than its query's.
`moco.symmetric` (the CIFAR-10 colab's option): loss_12 + loss_21, both views' keys enqueued.
The method state holds the target, the queue and its pointer, on the devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax import losses
from simclr_jax.errors import UserError
from simclr_jax.methods import Method, common


def init_queue(rng, queue_size: int, dim: int) -> dict:
    """A queue of `queue_size` random unit keys [K, D], its write pointer and fill count."""
    queue = jax.random.normal(rng, (queue_size, dim), jnp.float32)
    queue = queue / jnp.linalg.norm(queue, axis=1, keepdims=True)       # [K, D]
    return {"queue": queue, "queue_ptr": jnp.zeros((), jnp.int32),
            "queue_filled": jnp.zeros((), jnp.int32)}


def enqueue(method_state: dict, keys) -> dict:
    """FIFO write of the global batch of keys [B, D] at ptr; ptr <- (ptr + B) % K."""
    queue, ptr, filled = (method_state[k] for k in ("queue", "queue_ptr", "queue_filled"))
    K, B = queue.shape[0], keys.shape[0]
    queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (ptr, 0))
    return {**method_state, "queue": queue, "queue_ptr": (ptr + B) % K,
            "queue_filled": jnp.minimum(filled + B, K)}


def batch_shuffle(rng, batch_size: int):
    """A uniformly random permutation of the whole global key batch and its inverse.

    The reference's `torch.randperm` over all GPUs: with BN over groups, the key of example i is
    then normalised with statistics of a random set of other examples, not with those of its
    query's group (the leak shuffle BN blocks). A function of `rng` only, so every device count
    draws the same permutation. Returns (perm, inverse): shuffled = x[perm], x == shuffled[inverse].
    """
    perm = jax.random.permutation(rng, batch_size)                       # [B]
    return perm, jnp.argsort(perm)


def symmetric(config) -> bool:
    """The colab's symmetric option: both views are queries, both are keys (2B keys queued)."""
    return bool(config.moco.get("symmetric", False))


def key_features(network, config, method_state, x, rng):
    """L2-normalised keys [B, D] of images x in their original order, and the method state with
    the target's new BN statistics. With shuffle BN the key encoder sees a random order."""
    if config.moco.shuffle_bn:
        perm, inverse = batch_shuffle(rng, x.shape[0])
        out, method_state = common.apply_target(network, method_state, x[perm])
        k = out["proj"][inverse]                                         # [B, D] original order
    else:
        out, method_state = common.apply_target(network, method_state, x)
        k = out["proj"]
    return losses.l2_normalize(k), method_state


class MoCo(Method):
    state_config_keys = ("moco.",)

    def config_section(self):
        section = ml_collections.ConfigDict()
        section.queue_size = 65536
        section.shuffle_bn = True
        section.symmetric = False        # CIFAR-10 colab option: loss_12 + loss_21
        return "moco", section

    def runlocal(self, c) -> None:
        c.moco.queue_size = 4 * c.batch_size      # a multiple of 2B too (moco.symmetric)

    def validate(self, config, ctx) -> None:
        K, B = config.moco.queue_size, config.batch_size
        keys = 2 * B if symmetric(config) else B
        need = (f"2 x batch_size={keys} (moco.symmetric enqueues the keys of both views)"
                if symmetric(config) else f"batch_size={B}")
        if K <= 0 or K % keys:
            raise UserError(f"moco.queue_size={K} must be a positive multiple of {need} (the "
                            f"whole global batch of keys is enqueued each step); e.g. "
                            f"--config.moco.queue_size={max(keys, (K // keys) * keys)}.")
        n = ctx.num_train_examples
        if K > n:
            raise UserError(f"moco.queue_size={K} is larger than the training set ({n} images): "
                            f"the queue would hold keys of the same image several times. Use at "
                            f"most {n // B * B}.")
        super().validate(config, ctx)
        group = config.model.get("bn_group_size")
        if config.moco.shuffle_bn and (group is None or group >= B):
            raise UserError("moco.shuffle_bn=True needs BN over groups smaller than the batch: "
                            "set --config.model.bn_group_size (e.g. 32) below batch_size="
                            f"{B}, or --config.moco.shuffle_bn=False for global BN.")

    def build_network(self, config, num_classes: int):
        return common.build_ssl_network(config, num_classes)

    def init_state(self, config, network, variables, rng, ctx) -> dict:
        """EMA target + a queue of moco.queue_size random unit keys."""
        return {**common.init_target(variables),
                **init_queue(rng, config.moco.queue_size, config.head.out_dim)}

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        T = config.loss.temperature
        ms = state.method_state
        queue = ms["queue"]
        rng_12, rng_21 = jax.random.split(rng)
        q_out, batch_stats = common.apply_train(network, params, state.batch_stats,
                                                batch["view1"])
        k2, ms = key_features(network, config, ms, batch["view2"], rng_12)
        loss, metrics = losses.infonce_queue(q_out["proj"], k2, queue, T)
        keys = k2                                                        # [B, D]
        if symmetric(config):                                            # loss_12 + loss_21
            q2_out, batch_stats = common.apply_train(network, params, batch_stats,
                                                     batch["view2"])
            k1, ms = key_features(network, config, ms, batch["view1"], rng_21)
            loss_21, metrics_21 = losses.infonce_queue(q2_out["proj"], k1, queue, T)
            loss = loss + loss_21
            metrics = {name: (metrics[name] + metrics_21[name]) / 2 for name in metrics}
            keys = jnp.concatenate([k1, k2], axis=0)                     # [2B, D]
        ms = enqueue(ms, jax.lax.stop_gradient(keys))
        p_loss, p_metrics = common.probe_loss(q_out, batch["label"], num_views=1)
        metrics = {"loss": loss, **metrics, **p_metrics,
                   "queue_fill": ms["queue_filled"] / queue.shape[0]}
        return loss + p_loss, (batch_stats, ms, metrics)

    def after_update(self, network, config, state, ctx):
        return common.ema_update(config, state, ctx.total_steps)


METHOD = MoCo()
