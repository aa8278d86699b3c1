"""BYOL (Grill et al., 2020): online projector+predictor regress the EMA target's projection.

loss = (2 - 2 cos(p1, z2')) + (2 - 2 cos(p2, z1')), averaged over the batch; no negatives.
Shares MoCo v3's machinery: separate forward passes per view, cosine EMA schedule; the target
moves with tau_k right after optimizer step k.
"""
from __future__ import annotations

from simclr_jax import losses
from simclr_jax.errors import UserError
from simclr_jax.methods import common
from simclr_jax.methods.moco_v3 import EMATargetMethod, two_view_forward


class BYOL(EMATargetMethod):
    def validate(self, config, ctx) -> None:
        if config.ema.schedule not in ("cosine", "constant"):
            raise UserError(f"ema.schedule must be cosine or constant, "
                            f"got {config.ema.schedule!r}")

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        out1, out2, t1, t2, stats, ms = two_view_forward(network, params, state, batch)
        loss = (losses.byol_loss(out1["pred"], t2["proj"])
                + losses.byol_loss(out2["pred"], t1["proj"]))
        p1, pm = common.probe_loss(out1, batch["label"], num_views=1)
        p2, _ = common.probe_loss(out2, batch["label"], num_views=1)
        return loss + p1 + p2, (stats, ms, {"loss": loss, **pm})


METHOD = BYOL()
