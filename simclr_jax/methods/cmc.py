"""CMC (Tian et al., 2019, Contrastive Multiview Coding): the L and ab channels of an image in
CIE Lab are two views; each has its own encoder, and each view's feature is scored against a
memory bank of the OTHER view's features.

As HobbitLong/CMC (train_CMC.py, models/resnet.py, NCE/NCEAverage.py, NCE/NCECriterion.py):
  x in [0, 1] RGB -> Lab (skimage.color.rgb2lab, D65) -> (Lab - mean) / std (train_CMC.py's
      Normalize) -> L [B, H, W, 1] and ab [B, H, W, 2]
  v_l = normalise(fc_l(l_to_ab(L))), v_ab = normalise(fc_ab(ab_to_l(ab)))          [B, D] each
  K rows drawn uniformly once per example (column 0 = the example's own row), the SAME rows for
  both banks; out_l scores v_l against memory_ab[rows], out_ab scores v_ab against memory_l[rows]
  loss "nce": P = exp(s / T) / Z per side, Z_l and Z_ab = mean(exp(s / T)) * N each set once
      from the first batch; loss = NCECriterion(out_l) + NCECriterion(out_ab)
  loss "softmax" (`--softmax`, NCESoftmaxLoss): CE(s / T, label 0) per side, summed
  then memory_l[i] <- normalise(m memory_l[i] + (1 - m) v_l), the same for memory_ab (m 0.5).
The banks are methods/memory_bank.py's (InstDisc's): rows sharded over the mesh's "data" axis.
The evaluation encoder is RGB -> Lab -> both encoders -> [f_l, f_ab] concatenated (LinearProbing
--layer 6: the pooled features of both views), so load_encoder's users feed RGB as for any
other method. Each encoder is config.model (its width is each encoder's: 0.5 = the reference's
"v1", two half-width ResNets); the stem stays at cmc.stem_width channels as in the reference.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from simclr_jax import losses
from simclr_jax.errors import UserError
from simclr_jax.methods import EncoderSpec, Method, common, memory_bank, online_variables

LOSSES = ("nce", "softmax")

# skimage.color.rgb2lab (D65, 2-degree observer): sRGB gamma, this matrix, this white point.
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]], np.float32)
D65_WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)
# train_CMC.py's Normalize for view "Lab": the midpoint and half-range of each channel.
LAB_MEAN = np.array([(0 + 100) / 2, (-86.183 + 98.233) / 2, (-107.857 + 94.478) / 2], np.float32)
LAB_STD = np.array([(100 - 0) / 2, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2], np.float32)


def rgb_to_lab(rgb):
    """skimage.color.rgb2lab on [..., 3] RGB in [0, 1] (clipped) -> [..., 3] L in [0, 100], a, b
    (float32)."""
    x = jnp.clip(rgb.astype(jnp.float32), 0.0, 1.0)
    linear = jnp.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)   # sRGB gamma
    xyz = (linear @ XYZ_FROM_RGB.T) / D65_WHITE                                 # [..., 3]
    f = jnp.where(xyz > 0.008856, jnp.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def normalised_lab(rgb):
    """What the reference's encoders see: (Lab - LAB_MEAN) / LAB_STD, [..., 3]."""
    return (rgb_to_lab(rgb) - LAB_MEAN) / LAB_STD


class LabEncoders(nn.Module):
    """RGB [B, H, W, 3] in [0, 1] -> [f_l, f_ab] [B, F_l + F_ab]: the L channel through
    `l_to_ab`, the ab channels through `ab_to_l` (the reference's names)."""
    l_to_ab: nn.Module
    ab_to_l: nn.Module

    @property
    def num_features(self) -> int:
        return self.l_to_ab.num_features + self.ab_to_l.num_features

    def __call__(self, x, train: bool):
        lab = normalised_lab(x)                                            # [B, H, W, 3]
        f_l = self.l_to_ab(lab[..., :1], train=train)                      # [B, F]
        f_ab = self.ab_to_l(lab[..., 1:], train=train)                     # [B, F]
        return jnp.concatenate([f_l, f_ab], axis=-1)                       # [B, 2F]


class ViewEmbeddings(nn.Module):
    """Each view's own fc (Linear with bias, torch init) on its half of the features:
    [B, 2F] -> [e_l, e_ab] [B, 2D] (not normalised)."""
    out_dim: int

    @nn.compact
    def __call__(self, features, train: bool = False):
        from simclr_jax.models.heads import TORCH_LINEAR_INIT, MLPHead
        fc = dict(hidden_dims=(), out_dim=self.out_dim, use_bn=False, use_bias=True,
                  last_bn=False, kernel_init=TORCH_LINEAR_INIT)
        f_l, f_ab = jnp.split(features, 2, axis=-1)                        # [B, F] each
        e_l = MLPHead(**fc, name="l")(f_l, train=train)                     # [B, D]
        e_ab = MLPHead(**fc, name="ab")(f_ab, train=train)                  # [B, D]
        return jnp.concatenate([e_l, e_ab], axis=-1)                       # [B, 2D]


def build_encoders(config) -> LabEncoders:
    """Two copies of config.model's ResNet (ab's first conv sees 2 channels, L's one)."""
    from simclr_jax.models import build_backbone
    if config.model.name != "resnet":
        raise UserError(f"method cmc encodes L and ab with two ResNets; model.name="
                        f"{config.model.name!r} is not supported (use model.name=resnet).")
    stem = int(config.cmc.stem_width) or None
    encoder = build_backbone(config.model).clone(stem_width=stem)
    return LabEncoders(l_to_ab=encoder.clone(), ab_to_l=encoder.clone())


class CMC(Method):
    num_views = (1, 1)
    needs_index = True
    state_config_keys = ("cmc.",)

    def config_section(self):
        section = ml_collections.ConfigDict()
        section.loss = "nce"             # "nce" (NCEAverage + NCECriterion) | "softmax"
        section.num_negatives = 16384    # K (--nce_k), the same drawn rows for both banks
        section.bank_momentum = 0.5      # m (--nce_m)
        section.stem_width = 64          # the encoders' stem conv channels (the reference's
                                         # ResNet keeps 64 at every width); 0 = 64 x width
        return "cmc", section

    def runlocal(self, c) -> None:
        c.cmc.num_negatives = 64
        c.cmc.stem_width = 0             # the stem shrinks with the tiny encoders

    def validate(self, config, ctx) -> None:
        super().validate(config, ctx)
        s = config.cmc
        if s.loss not in LOSSES:
            raise UserError(f"cmc.loss={s.loss!r}: use one of {', '.join(LOSSES)}.")
        if s.num_negatives <= 0:
            raise UserError(f"cmc.num_negatives={s.num_negatives}: give K > 0 drawn negatives "
                            f"per example (--nce_k).")
        if not 0.0 <= s.bank_momentum < 1.0:
            raise UserError(f"cmc.bank_momentum={s.bank_momentum}: give m in [0, 1) "
                            f"(the bank row keeps m, the new feature adds 1 - m).")
        if s.stem_width < 0:
            raise UserError(f"cmc.stem_width={s.stem_width}: give the stem's channels, or 0 "
                            f"for 64 x model.width.")
        normalize = config.aug.view1.normalize
        if normalize != "none":
            raise UserError(f"aug.view1.normalize={normalize!r}: method cmc converts [0, 1] RGB "
                            f"to Lab itself and normalises Lab; set it to 'none'.")
        build_encoders(config)

    def build_network(self, config, num_classes: int):
        from simclr_jax.methods.network import SSLNetwork
        return SSLNetwork(backbone=build_encoders(config),
                          projector=ViewEmbeddings(config.head.out_dim),
                          num_classes=num_classes if config.probe.enabled else 0)

    def init_state(self, config, network, variables, rng, ctx) -> dict:
        """memory_l, memory_ab [rows, D] (drawn one after the other, as the reference's buffers)
        and, for NCE, Z_l and Z_ab (-1 until the first batch sets them)."""
        n, dim = ctx.num_train_examples, config.head.out_dim
        rows = memory_bank.bank_rows(n, ctx.mesh)
        rng_l, rng_ab = jax.random.split(rng)
        state = {"memory_l": memory_bank.init_bank(rng_l, n, rows, dim),
                 "memory_ab": memory_bank.init_bank(rng_ab, n, rows, dim)}
        if config.cmc.loss == "nce":
            state["nce_z_l"] = jnp.full((), -1.0, jnp.float32)
            state["nce_z_ab"] = jnp.full((), -1.0, jnp.float32)
        return state

    def state_sharding(self, config, ctx, state):
        return {k: memory_bank.ROWS_SPEC if k.startswith("memory_") else P() for k in state}

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        out, batch_stats = common.apply_train(network, params, state.batch_stats,
                                              batch["view1"])
        e_l, e_ab = jnp.split(out["proj"], 2, axis=-1)                     # [B, D] each
        loss, ms, metrics = objective(losses.l2_normalize(e_l), losses.l2_normalize(e_ab),
                                      state.method_state, batch["index"], rng, config.cmc,
                                      config.loss.temperature, ctx.num_train_examples, ctx.mesh)
        p_loss, p_metrics = common.probe_loss(out, batch["label"], num_views=1)
        return loss + p_loss, (batch_stats, ms, {"loss": loss, **metrics, **p_metrics})

    def encoder(self, config) -> EncoderSpec:
        return EncoderSpec(backbone=build_encoders(config), variables=online_variables)


def objective(v_l, v_ab, method_state: dict, index, rng, s, T: float, n: int, mesh=None):
    """The loss of unit features v_l, v_ab [B, D] of examples `index` [B] against the other
    view's bank, and the state after the step (both banks written, Z_l / Z_ab set on the first
    call). s: config.cmc; mesh: the banks' rows are sharded over its "data" axis.
    Returns (loss, method_state, metrics)."""
    ms = dict(method_state)
    mem_l, mem_ab = ms["memory_l"], ms["memory_ab"]                        # [rows, D] each
    pos_l = memory_bank.read_rows(mem_l, index, mesh)                      # [B, D]
    pos_ab = memory_bank.read_rows(mem_ab, index, mesh)                    # [B, D]
    rows = memory_bank.draw_rows(rng, index, s.num_negatives, n)           # [B, K+1]
    logits_l = memory_bank.row_logits(mem_ab, rows, v_l, mesh) / T         # [B, K+1]
    logits_ab = memory_bank.row_logits(mem_l, rows, v_ab, mesh) / T        # [B, K+1]
    metrics = {}
    if s.loss == "nce":
        out_l, z_l = memory_bank.nce_probs(logits_l, ms["nce_z_l"], n)
        out_ab, z_ab = memory_bank.nce_probs(logits_ab, ms["nce_z_ab"], n)
        l_loss, ab_loss = memory_bank.nce_loss(out_l, n), memory_bank.nce_loss(out_ab, n)
        ms["nce_z_l"] = metrics["nce_z_l"] = z_l
        ms["nce_z_ab"] = metrics["nce_z_ab"] = z_ab
        l_prob, ab_prob = jnp.mean(out_l[:, 0]), jnp.mean(out_ab[:, 0])
    else:
        labels = jnp.zeros_like(index)
        l_loss = losses.softmax_cross_entropy(logits_l, labels)
        ab_loss = losses.softmax_cross_entropy(logits_ab, labels)
        l_prob, ab_prob = jnp.mean(logits_l[:, 0]), jnp.mean(logits_ab[:, 0])
    m = s.bank_momentum
    ms["memory_l"] = memory_bank.update_bank(mem_l, index, pos_l, jax.lax.stop_gradient(v_l),
                                             m, mesh)
    ms["memory_ab"] = memory_bank.update_bank(mem_ab, index, pos_ab,
                                              jax.lax.stop_gradient(v_ab), m, mesh)
    metrics.update(l_loss=l_loss, ab_loss=ab_loss, l_prob=l_prob, ab_prob=ab_prob)
    return l_loss + ab_loss, ms, metrics


METHOD = CMC()
