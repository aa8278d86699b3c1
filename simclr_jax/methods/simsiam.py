"""SimSiam (Chen & He, 2021): a Siamese network with a predictor and a stop-gradient; no
negatives, no momentum encoder (facebookresearch/simsiam `simsiam/builder.py`,
`main_simsiam.py`).

loss = -(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2, each view in its own forward pass (BN
statistics per view, synchronised over the global batch as the reference's SyncBN).
Projector: (Linear(no bias) -> BN -> ReLU) x (num_layers - 1) -> Linear -> BN(no affine); the
reference's last Linear has a frozen bias that the affine-free BN cancels, so it has none here.
Predictor: Linear(no bias) -> BN -> ReLU -> Linear(bias), bottleneck predictor.hidden_dim.
`simsiam.fix_pred_lr` (the README's command, `--fix-pred-lr`): the predictor trains at the
peak LR for the whole run while the rest follows the cosine schedule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax.methods import Method, ParamGroup, common, frozen_backbone_groups, probe_group


def negative_cosine(p, z):
    """-mean_i cos(p_i, sg(z_i)) over the global batch; p, z: [B, D]."""
    z = jax.lax.stop_gradient(z)
    p = p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True), 1e-8)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-8)
    return -jnp.mean(jnp.sum(p * z, axis=-1))


def build_heads(config, num_features: int):
    """(projector, predictor) as simsiam/builder.py builds them (PyTorch Linear init)."""
    from simclr_jax.models.heads import TORCH_LINEAR_INIT, MLPHead
    h, group = config.head, config.model.get("bn_group_size")
    hidden = h.hidden_dim if h.hidden_dim > 0 else num_features
    projector = MLPHead(hidden_dims=(hidden,) * (h.num_layers - 1), out_dim=h.out_dim,
                        use_bn=True, use_bias=False, last_bn=True, last_bn_affine=False,
                        bn_group_size=group, kernel_init=TORCH_LINEAR_INIT)
    predictor = MLPHead(hidden_dims=(config.predictor.hidden_dim,), out_dim=h.out_dim,
                        use_bn=True, use_bias=False, last_use_bias=True, last_bn=False,
                        bn_group_size=group, kernel_init=TORCH_LINEAR_INIT)
    return projector, predictor


class SimSiam(Method):
    state_config_keys = ("simsiam.",)   # fix_pred_lr changes the optimizer state's layout

    def config_section(self):
        section = ml_collections.ConfigDict()
        section.fix_pred_lr = True       # --fix-pred-lr: predictor at the peak LR throughout
        return "simsiam", section

    def validate(self, config, ctx) -> None:
        """No temperature: the loss is a plain negative cosine."""

    def build_network(self, config, num_classes: int):
        from simclr_jax.methods.network import SSLNetwork
        from simclr_jax.models import build_backbone
        backbone = build_backbone(config.model)
        projector, predictor = build_heads(config, backbone.num_features)
        return SSLNetwork(backbone=backbone, projector=projector, predictor=predictor,
                          num_classes=num_classes if config.probe.enabled else 0)

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        out1, stats = common.apply_train(network, params, state.batch_stats, batch["view1"])
        out2, stats = common.apply_train(network, params, stats, batch["view2"])
        loss = 0.5 * (negative_cosine(out1["pred"], out2["proj"])
                      + negative_cosine(out2["pred"], out1["proj"]))
        p1, pm = common.probe_loss(out1, batch["label"], num_views=1)
        p2, _ = common.probe_loss(out2, batch["label"], num_views=1)
        return loss + p1 + p2, (stats, state.method_state, {"loss": loss, **pm})

    def param_groups(self, config, ctx) -> tuple:
        groups = probe_group(config) + frozen_backbone_groups(config)
        if config.simsiam.fix_pred_lr:
            groups += (ParamGroup(("predictor",), fixed_lr=True),)
        return groups


METHOD = SimSiam()
