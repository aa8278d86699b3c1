"""MoCo v3 (Chen, Xie & He, 2021): no queue; online projector+predictor, EMA target projector.

loss = ctr(q1, k2) + ctr(q2, k1), ctr = CE(q·kᵀ/T, own index) x 2T over the global batch.
Each view goes through each encoder in a SEPARATE forward pass (BN statistics per view).
EMA timing as the reference: the key encoder is updated with m_{k+1} before the keys of step k+1.
"""
from __future__ import annotations

from simclr_jax import losses
from simclr_jax.methods import common
from simclr_jax.methods.network import SSLNetwork
from simclr_jax.models import build_backbone
from simclr_jax.errors import UserError


def build_network(config, num_classes: int) -> SSLNetwork:
    backbone = build_backbone(config.model)
    projector, predictor = common.build_heads(config, backbone.num_features)
    if predictor is None:
        raise UserError("moco_v3 needs a predictor: set --config.head.kind=moco_v3")
    return SSLNetwork(backbone=backbone, projector=projector, predictor=predictor,
                      num_classes=num_classes if config.probe.enabled else 0,
                      knn_features=config.eval.get("knn_features", "backbone"))


def validate(config, num_train_examples: int) -> None:
    if config.loss.temperature <= 0:
        raise UserError(f"loss.temperature must be > 0, got {config.loss.temperature}")


def init_extras(config, network, variables, rng) -> dict:
    return common.init_target(variables)


def two_view_forward(network, params, state, batch):
    """Online outputs of both views (separate passes) and target outputs of both views."""
    out1, stats = common.apply_train(network, params, state.batch_stats, batch["view1"])
    out2, stats = common.apply_train(network, params, stats, batch["view2"])
    t1, target_stats = common.apply_target(network, state, batch["view1"])
    t2, target_stats = common.apply_target(network, state.replace(target_batch_stats=target_stats),
                                           batch["view2"])
    return out1, out2, t1, t2, stats, target_stats


def compute_loss(network, config, params, state, batch, rng):
    out1, out2, t1, t2, stats, target_stats = two_view_forward(network, params, state, batch)
    T = config.loss.temperature
    l12, m12 = losses.moco_v3_ctr(out1["pred"], t2["proj"], T)
    l21, m21 = losses.moco_v3_ctr(out2["pred"], t1["proj"], T)
    loss = l12 + l21
    p1, pm = common.probe_loss(out1, batch["label"], num_views=1)
    p2, _ = common.probe_loss(out2, batch["label"], num_views=1)
    metrics = {"loss": loss,
               **{k: (m12[k] + m21[k]) / 2 for k in m12}, **pm}
    return loss + p1 + p2, (stats, {"target_batch_stats": target_stats}, metrics)


EMA_OF_NEXT_STEP = True  # the key encoder moves with m_{k+1} (common.ema_update)


def after_update(network, config, state, total_steps):
    return common.ema_update(config, state, total_steps, momentum_of_next_step=EMA_OF_NEXT_STEP)
