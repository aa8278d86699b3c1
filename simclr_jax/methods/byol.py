"""BYOL (Grill et al., 2020): online projector+predictor regress the EMA target's projection.

loss = (2 - 2 cos(p1, z2')) + (2 - 2 cos(p2, z1')), averaged over the batch; no negatives.
Shares MoCo v3's machinery: separate forward passes per view, cosine EMA schedule.
"""
from __future__ import annotations

from simclr_jax import losses
from simclr_jax.methods import common, moco_v3
from simclr_jax.errors import UserError

build_network = moco_v3.build_network
init_extras = moco_v3.init_extras


def validate(config, num_train_examples: int) -> None:
    if config.ema.schedule not in ("cosine", "constant"):
        raise UserError(f"ema.schedule must be cosine or constant, "
                         f"got {config.ema.schedule!r}")


def compute_loss(network, config, params, state, batch, rng):
    out1, out2, t1, t2, stats, target_stats = moco_v3.two_view_forward(network, params, state,
                                                                       batch)
    loss = losses.byol_loss(out1["pred"], t2["proj"]) + losses.byol_loss(out2["pred"], t1["proj"])
    p1, pm = common.probe_loss(out1, batch["label"], num_views=1)
    p2, _ = common.probe_loss(out2, batch["label"], num_views=1)
    metrics = {"loss": loss, **pm}
    return loss + p1 + p2, (stats, {"target_batch_stats": target_stats}, metrics)


after_update = common.ema_after_update
