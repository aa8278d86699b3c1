"""MoCo v3 (Chen, Xie & He, 2021): no queue; online projector+predictor, EMA target projector.

loss = ctr(q1, k2) + ctr(q2, k1), ctr = CE(q·kᵀ/T, own index) x 2T over the global batch.
Each view goes through each encoder in a SEPARATE forward pass (BN statistics per view).
EMA timing as the reference: the key encoder is updated with m_{k+1} before the keys of step k+1.
"""
from __future__ import annotations

from simclr_jax import losses
from simclr_jax.methods import Method, common


def two_view_forward(network, params, state, batch):
    """Online outputs of both views (separate passes), target outputs of both views, the new
    online BN statistics and the method state with the target's new BN statistics."""
    out1, stats = common.apply_train(network, params, state.batch_stats, batch["view1"])
    out2, stats = common.apply_train(network, params, stats, batch["view2"])
    t1, ms = common.apply_target(network, state.method_state, batch["view1"])
    t2, ms = common.apply_target(network, ms, batch["view2"])
    return out1, out2, t1, t2, stats, ms


class EMATargetMethod(Method):
    """Online projector+predictor against an EMA target: the network and state of MoCo v3/BYOL."""
    momentum_of_next_step = False

    def build_network(self, config, num_classes: int):
        return common.build_ssl_network(config, num_classes, needs_predictor=True,
                                        method_name=config.method)

    def init_state(self, config, network, variables, rng, ctx) -> dict:
        return common.init_target(variables)

    def after_update(self, network, config, state, ctx):
        return common.ema_update(config, state, ctx.total_steps,
                                 momentum_of_next_step=self.momentum_of_next_step)


class MoCoV3(EMATargetMethod):
    momentum_of_next_step = True  # the key encoder moves with m_{k+1}

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        out1, out2, t1, t2, stats, ms = two_view_forward(network, params, state, batch)
        T = config.loss.temperature
        l12, m12 = losses.moco_v3_ctr(out1["pred"], t2["proj"], T)
        l21, m21 = losses.moco_v3_ctr(out2["pred"], t1["proj"], T)
        loss = l12 + l21
        p1, pm = common.probe_loss(out1, batch["label"], num_views=1)
        p2, _ = common.probe_loss(out2, batch["label"], num_views=1)
        metrics = {"loss": loss, **{k: (m12[k] + m21[k]) / 2 for k in m12}, **pm}
        return loss + p1 + p2, (stats, ms, metrics)


METHOD = MoCoV3()
