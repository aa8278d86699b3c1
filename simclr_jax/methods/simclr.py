"""SimCLR (v1/v2): two views through one encoder, NT-Xent over the global batch.

Both views go through the network in ONE forward pass, as in the reference, so BN statistics
are computed over all 2B views of the global batch (SimCLR's global BN).

SimCLR v2's optional memory (config.simclr.memory, left out of the official code): a momentum
(EMA) copy of the encoder+projector embeds both views; its keys are queued (the MoCo queue) and
serve as K extra negatives for every anchor. Positives stay the two online views.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from simclr_jax import losses
from simclr_jax.errors import UserError
from simclr_jax.methods import Method, common
from simclr_jax.methods.moco import enqueue, init_queue


def uses_memory(config) -> bool:
    return bool(config.get("simclr", {}).get("memory", False))


class SimCLR(Method):
    state_config_keys = ("simclr.",)

    def config_section(self):
        section = ml_collections.ConfigDict()
        section.memory = False           # SimCLR v2: momentum encoder + queue of extra negatives
        section.memory_size = 65536      # keys in that queue (EMA settings: ema.*)
        return "simclr", section

    def runlocal(self, c) -> None:
        if c.simclr.memory:
            c.simclr.memory_size = 4 * 2 * c.batch_size

    def validate(self, config, ctx) -> None:
        super().validate(config, ctx)
        if uses_memory(config):
            K, keys = config.simclr.memory_size, 2 * config.batch_size
            if K <= 0 or K % keys:
                raise UserError(f"simclr.memory_size={K} must be a positive multiple of 2 x "
                                f"batch_size = {keys} (both views' keys are queued each step).")
            if K > 2 * ctx.num_train_examples:
                raise UserError(f"simclr.memory_size={K} exceeds the "
                                f"{2 * ctx.num_train_examples} views of one epoch; the memory "
                                f"would repeat images. Lower it.")

    def build_network(self, config, num_classes: int):
        return common.build_ssl_network(config, num_classes)

    def init_state(self, config, network, variables, rng, ctx) -> dict:
        if not uses_memory(config):
            return {}
        return {**common.init_target(variables),
                **init_queue(rng, config.simclr.memory_size, config.head.out_dim)}

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        x = jnp.concatenate([batch["view1"], batch["view2"]], axis=0)    # [2B, H, W, 3]
        out, batch_stats = common.apply_train(network, params, state.batch_stats, x)
        z1, z2 = jnp.split(out["proj"], 2, axis=0)                       # [B, D] each
        ms = state.method_state
        memory = ms["queue"] if uses_memory(config) else None
        loss, metrics = losses.nt_xent(z1, z2, config.loss.temperature, memory=memory)
        p_loss, p_metrics = common.probe_loss(out, batch["label"], num_views=2)
        metrics = {"loss": loss, **metrics, **p_metrics}
        if memory is not None:
            k_out, ms = common.apply_target(network, ms, x)
            keys = losses.l2_normalize(k_out["proj"])                    # [2B, D]
            ms = enqueue(ms, keys)
            metrics["queue_fill"] = ms["queue_filled"] / ms["queue"].shape[0]
        return loss + p_loss, (batch_stats, ms, metrics)

    def after_update(self, network, config, state, ctx):
        if not uses_memory(config):
            return state, {}
        return common.ema_update(config, state, ctx.total_steps)


METHOD = SimCLR()
