"""CPC v2 (Henaff et al. 2020, "Data-Efficient Image Recognition with Contrastive Predictive
Coding", arXiv 1905.09272). No official code: the paper and its appendix pseudo-code are the
reference; every choice they leave open is listed in FIDELITY.md.

One view (a crop) is cut into a G x G grid of overlapping patches (`data.patch_grid`); each
patch gets its own flip and colour dropping (inside the step, from the step's key) and is
encoded on its own by a ResNet with layer norm (no batch statistics: they would let patches
see each other), giving patch features z [B, G, G, D]. For each prediction direction the grid
is turned (`models.masked_context.orient`) and a masked convolutional context network gives
c [B, G, G, D] whose row r sees rows <= r only; W_k c[r, j] (a 1x1 conv, x emb_scale)
predicts the target projection of z[r + k, j] for k = min_step..max_step, scored by InfoNCE
against every target of the global batch (`losses.grid_prediction_infonce`). The loss is the
sum over directions and steps. The encoder used for evaluation is image -> grid -> ResNet ->
mean of the patch features (`models.patch_encoder.PatchGridEncoder`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax import losses
from simclr_jax.data.patch_grid import augment_patches, grid_size, patch_grid
from simclr_jax.errors import UserError
from simclr_jax.data.aug_presets import view_names
from simclr_jax.methods import EncoderSpec, Method, common, online_variables
from simclr_jax.models.masked_context import DIRECTIONS, RowCausalContextNetwork, orient
from simclr_jax.models.patch_encoder import PatchGridEncoder

SECTION = "cpc_v2"


def prediction_steps(section) -> tuple:
    return tuple(range(int(section.min_step), int(section.max_step) + 1))


class PatchPredictionNetwork(nn.Module):
    """Patch encoder -> per direction: context network, target projection, W_k predictions.

    The directions' networks are one vmapped module each (parameters stacked on a leading
    axis of len(directions)): the same computation as separate modules, a quarter of the
    program to compile.
    """
    backbone: PatchGridEncoder
    directions: tuple
    steps: tuple
    context_blocks: int
    context_width: int
    target_dim: int
    emb_scale: float
    num_classes: int = 0

    def setup(self):
        stacked = dict(variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=0,
                       out_axes=0, axis_size=len(self.directions))
        self.context = nn.vmap(RowCausalContextNetwork, **stacked)(
            self.context_blocks, self.context_width, name="context")
        # No bias on the targets: a bias shifts all logits of a prediction by the same amount,
        # so the loss cannot depend on it; its gradient is rounding noise that Adam would
        # turn into lr-sized random steps.
        self.target_proj = nn.vmap(nn.Dense, **stacked)(self.target_dim, use_bias=False,
                                                         name="target")
        # W_k for every k side by side: columns [k * T, (k + 1) * T) are W_k (and its bias).
        self.predict = nn.vmap(nn.Dense, **stacked)(self.target_dim * len(self.steps),
                                                     name="predict")
        if self.num_classes > 0:
            self.probe = nn.Dense(self.num_classes, name="probe")

    def predictions(self, z):
        """z [B, G, G, D] -> (targets [R, B, G, G, T], {k: preds [R, B, G, G, T]}) for the R
        directions, each in its turned frame (`orient`: row r predicts row r + k)."""
        zs = jnp.stack([orient(z, d) for d in self.directions])          # [R, B, G, G, D]
        c = self.context(zs)                                              # [R, B, G, G, D]
        preds = jnp.split(self.predict(c) * self.emb_scale, len(self.steps), axis=-1)
        return self.target_proj(zs), dict(zip(self.steps, preds))

    def from_patches(self, patches, train: bool):
        """patches [B, G, G, P, P, 3] -> {"z", "features", "targets", "preds",
        "probe_logits"}."""
        z = self.backbone.encode_patches(patches, train)                  # [B, G, G, D]
        features = jnp.mean(z, axis=(1, 2))                               # [B, D]
        targets, preds = self.predictions(z)
        out = {"z": z, "features": features, "targets": targets, "preds": preds}
        if self.num_classes > 0:
            out["probe_logits"] = self.probe(jax.lax.stop_gradient(features))
        return out

    def __call__(self, images, train: bool):
        """Un-augmented images [B, S, S, 3] (initialisation)."""
        return self.from_patches(patch_grid(images, self.backbone.patch_size,
                                            self.backbone.stride), train)


def patch_prediction_loss(targets, preds: dict):
    """Sum over directions and steps of the grid InfoNCE (targets [R, B, G, G, T], preds
    {k: [R, B, G, G, T]}); metrics per step, averaged over the directions."""
    total, metrics = 0.0, {}
    for k, p in preds.items():
        loss_k, m = jax.vmap(lambda pr, tg, k=k: losses.grid_prediction_infonce(pr, tg, k))(
            p, targets)                                                   # [R]
        total = total + jnp.sum(loss_k)
        metrics[f"loss_step{k}"] = jnp.mean(loss_k)
        metrics[f"contrast_acc_step{k}"] = jnp.mean(m["contrast_acc"])
    return total, metrics


def view_size(config) -> int:
    size = config.aug.view1.get("image_size")
    return int(size if size is not None else config.dataset.image_size)


class CPCv2(Method):
    num_views = (1, 1)
    state_config_keys = (f"{SECTION}.",)   # directions, steps and widths shape the parameters

    def config_section(self):
        s = ml_collections.ConfigDict()
        s.patch_size = 64              # 64 px patches with stride 32: 7 x 7 of a 256 px crop
        s.patch_stride = 32
        s.directions = DIRECTIONS      # the paper's four
        s.min_step = 1                 # predict rows r + min_step .. r + max_step
        s.max_step = 5
        s.context_blocks = 5           # pseudo-code: 5 residual blocks of width 256
        s.context_width = 256
        s.target_dim = 64              # pseudo-code: target_dim=64, emb_scale=0.1
        s.emb_scale = 0.1
        s.patch_flip_prob = 0.5        # per-patch horizontal flip
        s.color_drop_prob = 1.0        # per-patch: keep one of the 3 channels
        return SECTION, s

    def runlocal(self, c) -> None:
        """A 3 x 3 grid of half-size patches (stride a quarter of the image), steps 1..2."""
        s, size = c[SECTION], view_size(c)
        s.patch_size, s.patch_stride = max(1, size // 2), max(1, size // 4)
        g = grid_size(size, s.patch_size, s.patch_stride)
        s.max_step = min(s.max_step, g - 1)
        s.min_step = min(s.min_step, s.max_step)
        s.context_width = 16

    def validate(self, config, ctx) -> None:
        s = config[SECTION]
        if config.model.name != "resnet":
            raise UserError(f"method {config.method} encodes patches with a ResNet: set "
                            f"model.name='resnet' (got {config.model.name!r}).")
        for name in view_names(config.aug):
            g = grid_size(int(config.aug[name].get("image_size") or config.dataset.image_size),
                          s.patch_size, s.patch_stride)
            if not 1 <= s.min_step <= s.max_step <= g - 1:
                raise UserError(f"{SECTION}.min_step/max_step=({s.min_step}, {s.max_step}): a "
                                f"{g} x {g} patch grid allows 1 <= min_step <= max_step <= "
                                f"{g - 1}.")
        bad = [d for d in s.directions if d not in DIRECTIONS]
        if bad or not s.directions or len(set(s.directions)) != len(s.directions):
            raise UserError(f"{SECTION}.directions={tuple(s.directions)}: give distinct "
                            f"directions from {DIRECTIONS}.")
        for key in ("patch_flip_prob", "color_drop_prob"):
            if not 0.0 <= s[key] <= 1.0:
                raise UserError(f"{SECTION}.{key}={s[key]} is a probability: give a value in "
                                f"[0, 1].")

    def _encoder(self, config) -> PatchGridEncoder:
        from simclr_jax.models import build_backbone
        s = config[SECTION]
        return PatchGridEncoder(encoder=build_backbone(config.model),
                                patch_size=int(s.patch_size), stride=int(s.patch_stride))

    def build_network(self, config, num_classes: int):
        s = config[SECTION]
        return PatchPredictionNetwork(
            backbone=self._encoder(config), directions=tuple(s.directions),
            steps=prediction_steps(s), context_blocks=int(s.context_blocks),
            context_width=int(s.context_width), target_dim=int(s.target_dim),
            emb_scale=float(s.emb_scale),
            num_classes=num_classes if config.probe.enabled else 0)

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        s = config[SECTION]
        patches = patch_grid(batch["view1"], network.backbone.patch_size,
                             network.backbone.stride)                     # [B, G, G, P, P, 3]
        patches = augment_patches(rng, patches, flip_prob=s.patch_flip_prob,
                                  color_drop_prob=s.color_drop_prob)
        out, mutated = network.apply({"params": params, "batch_stats": state.batch_stats},
                                     patches, train=True, mutable=["batch_stats"],
                                     method=PatchPredictionNetwork.from_patches)
        loss, metrics = patch_prediction_loss(out["targets"], out["preds"])
        p_loss, p_metrics = common.probe_loss(out, batch["label"], num_views=1)
        stats = mutated.get("batch_stats", state.batch_stats)
        return loss + p_loss, (stats, state.method_state,
                               {"loss": loss, **metrics, **p_metrics})

    def encoder(self, config) -> EncoderSpec:
        return EncoderSpec(backbone=self._encoder(config), variables=online_variables)


METHOD = CPCv2()
