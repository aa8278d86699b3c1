"""DINO (Caron et al., 2021): self-distillation with no labels (facebookresearch/dino
`main_dino.py`, `utils.py`, `vision_transformer.py`).

A student (backbone -> DINOHead) matches the softmax of an EMA teacher of the same architecture:

  loss = mean over pairs (teacher global crop iq, student crop v), v != iq, of
         mean_b CE(softmax((t_iq - c) / T_t), log_softmax(s_v / T_s))

The student sees every view ("view1".."viewV": 2 global crops, then the local ones), the
teacher only view1 and view2. As `MultiCropWrapper`, consecutive views of one size go through
the backbone in one pass (their BN statistics shared). The centre c (the method's state, with
the teacher) moves after each step: c <- m c + (1 - m) mean of the teacher's outputs over the
GLOBAL batch of both global crops, m = dino.center_momentum. The teacher temperature T_t is
linear from dino.warmup_teacher_temp to dino.teacher_temp over dino.warmup_teacher_temp_epochs
epochs, held for a whole epoch (`np.linspace` indexed by epoch); T_s = dino.student_temp.
The teacher is the EMA of the whole student (backbone and head) with m_k = the cosine from
ema.base to 1 (`utils.cosine_scheduler`), applied right after optimizer step k.

Last layer: weight-normalised Linear(bottleneck, out_dim, no bias); `norm_last_layer=True`
fixes the norm g to 1 (no g parameter). It is frozen for the first dino.freeze_last_layer
epochs: `cancel_gradients_last_layer` sets its grad to None, so torch's AdamW skips it (no
update, no weight decay, its Adam state and step count do not advance, then start fresh). That
is exactly a ParamGroup frozen until step freeze_last_layer x steps_per_epoch, whose optimizer
copy then runs at the global step's LR and weight decay (optim.freeze_until).

Evaluation (kNN monitor, knn_eval, linear_eval, export, load_encoder) uses the TEACHER's
backbone, as the reference evaluates `checkpoint["teacher"]`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax.data.aug_presets import view_names
from simclr_jax.errors import UserError
from simclr_jax.methods import (EncoderSpec, Method, ParamGroup, common,
                                frozen_backbone_groups, probe_group)

LAST_LAYER = "last_layer"
HEAD_INIT = nn.initializers.normal(0.02)      # trunc_normal_(std=.02, a=-2, b=2): +-100 std
TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
NUM_GLOBAL_CROPS = 2                           # the teacher sees images[:2]


# ----------------------------------------------------------------------------- head

class WeightNormDense(nn.Module):
    """nn.utils.weight_norm(nn.Linear(in, out, bias=False)): W = g * v / ||v|| per output unit.

    fixed_norm=True: g is 1 and not a parameter (`norm_last_layer=True`). Otherwise g is a
    [1, out] parameter starting at 1 (2-D like torch's weight_g [out, 1], so weight decay
    reaches it there and here)."""
    features: int
    fixed_norm: bool = True

    @nn.compact
    def __call__(self, x):                                                   # [B, D]
        v = self.param("kernel", TORCH_LINEAR_INIT, (x.shape[-1], self.features))   # [D, K]
        w = v / jnp.sqrt(jnp.sum(jnp.square(v), axis=0, keepdims=True))     # unit columns
        if not self.fixed_norm:
            w = w * self.param("scale", nn.initializers.ones, (1, self.features))
        return x @ w                                                         # [B, K]


class DINOHead(nn.Module):
    """Linear -> GELU (x num_layers - 1, width hidden_dim) -> Linear(bottleneck) -> L2
    normalise -> weight-normalised last layer (out_dim). No BN (`use_bn_in_head=False`)."""
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    out_dim: int = 65536
    num_layers: int = 3
    norm_last_layer: bool = True

    @nn.compact
    def __call__(self, x, train: bool = True):                              # [B, F]
        del train                                     # no BN, no dropout: one graph
        dense = lambda f, name: nn.Dense(f, kernel_init=HEAD_INIT,  # noqa: E731
                                         bias_init=nn.initializers.zeros, name=name)
        for i in range(max(self.num_layers, 1) - 1):
            x = nn.gelu(dense(self.hidden_dim, f"dense{i}")(x), approximate=False)  # [B, H]
        x = dense(self.bottleneck_dim, f"dense{max(self.num_layers, 1) - 1}")(x)   # [B, D]
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)     # F.normalize
        return WeightNormDense(self.out_dim, self.norm_last_layer, name=LAST_LAYER)(x)  # [B, K]


# ----------------------------------------------------------------------------- schedules

def teacher_temperature(epoch, warmup_temp: float, temp: float, warmup_epochs: int):
    """DINOLoss.teacher_temp_schedule[epoch]: np.linspace(warmup_temp, temp, W) for the first W
    epochs (reaching `temp` at epoch W - 1), then `temp`."""
    e = jnp.asarray(epoch, jnp.float32)
    warm = warmup_temp + (temp - warmup_temp) * e / max(int(warmup_epochs) - 1, 1)
    return jnp.where(e < warmup_epochs, warm, temp).astype(jnp.float32)


# ----------------------------------------------------------------------------- loss

def dino_loss(student_out, teacher_out, center, student_temp, teacher_temp):
    """DINOLoss.forward. student_out [V, B, K] (every crop), teacher_out [G, B, K] (the global
    crops, raw), center [1, K]. Cross-entropy of each (teacher crop iq, student crop v != iq)
    pair, averaged over the batch, then over the 2(V - 1) pairs. No gradient reaches the
    teacher side."""
    log_p = jax.nn.log_softmax(student_out / student_temp, axis=-1)          # [V, B, K]
    q = jax.nn.softmax((teacher_out - center) / teacher_temp, axis=-1)       # [G, B, K]
    q = jax.lax.stop_gradient(q)
    ce = -jnp.einsum("gbk,vbk->gvb", q, log_p).mean(-1)                      # [G, V]
    g, v = ce.shape
    keep = 1.0 - jnp.eye(g, v, dtype=ce.dtype)                               # skip v == iq
    return jnp.sum(ce * keep) / jnp.sum(keep)


def update_center(center, teacher_out, momentum: float):
    """DINOLoss.update_center: c m + (1 - m) mean over the global batch of every global crop's
    raw teacher output. teacher_out [G, B, K] -> [1, K]."""
    batch_center = jnp.mean(teacher_out.reshape(-1, teacher_out.shape[-1]), axis=0,
                            keepdims=True)                                   # [1, K]
    return center * momentum + jax.lax.stop_gradient(batch_center) * (1.0 - momentum)


# ----------------------------------------------------------------------------- forward

def size_groups(views: list) -> list:
    """[(start, end)] runs of consecutive views of one spatial size (`MultiCropWrapper`'s
    unique_consecutive over the crop widths)."""
    groups, start = [], 0
    for i in range(1, len(views) + 1):
        if i == len(views) or views[i].shape[1:3] != views[start].shape[1:3]:
            groups.append((start, i))
            start = i
    return groups


def student_forward(network, params, batch_stats, views, rng):
    """One training-mode pass per size group; returns (outputs of every crop [V*B, K] in view
    order, the probe outputs of the first group, its size, the new BN statistics)."""
    projections, probe_out, probe_views = [], None, 0
    for i, (a, b) in enumerate(size_groups(views)):
        x = jnp.concatenate(views[a:b], axis=0)                              # [n*B, S, S, 3]
        out, batch_stats = common.apply_train(network, params, batch_stats, x,
                                              use_probe=(i == 0),
                                              rngs={"dropout": jax.random.fold_in(rng, i)})
        projections.append(out["proj"])
        if i == 0:
            probe_out, probe_views = out, b - a
    return jnp.concatenate(projections, axis=0), probe_out, probe_views, batch_stats


def teacher_forward(network, method_state, views):
    """The teacher on the global crops (one pass per size group), in training mode as the
    reference's (BN with batch statistics), no gradient; -> ([G*B, K], new method_state)."""
    outputs, ms = [], method_state
    for a, b in size_groups(views):
        out, ms = common.apply_target(network, ms, jnp.concatenate(views[a:b], axis=0))
        outputs.append(out["proj"])
    return jnp.concatenate(outputs, axis=0), ms


def teacher_variables(arrays: dict) -> dict:
    """The teacher's backbone and head in the online network's naming (evaluation, export)."""
    ms = arrays.get("method_state") or {}
    keep = ("backbone", "projector")
    return {"params": {k: v for k, v in (ms.get("target_params") or {}).items() if k in keep},
            "batch_stats": {k: v for k, v in (ms.get("target_batch_stats") or {}).items()
                            if k in keep}}


# ----------------------------------------------------------------------------- method

class DINO(Method):
    num_views = (NUM_GLOBAL_CROPS, 64)
    state_config_keys = ("dino.",)   # out_dim shapes the centre; freeze_last_layer > 0 the
                                     # optimizer state's layout

    def config_section(self):
        s = ml_collections.ConfigDict()
        s.out_dim = 65536                  # --out_dim
        s.hidden_dim = 2048                # DINOHead hidden_dim
        s.bottleneck_dim = 256             # DINOHead bottleneck_dim
        s.num_layers = 3                   # DINOHead nlayers
        s.norm_last_layer = True           # --norm_last_layer
        s.student_temp = 0.1
        s.warmup_teacher_temp = 0.04       # --warmup_teacher_temp
        s.teacher_temp = 0.04              # --teacher_temp (main_dino.py's default)
        s.warmup_teacher_temp_epochs = 0   # --warmup_teacher_temp_epochs (default 0)
        s.center_momentum = 0.9
        s.freeze_last_layer = 1.0          # --freeze_last_layer, in epochs
        return "dino", s

    def runlocal(self, c) -> None:
        """A 4096-way last layer (not 65536) and local crops at half the global size. The MLP
        keeps its widths: with N(0, 0.02) kernels a narrow MLP shrinks its output by about
        sqrt(width) per layer, and the L2 normalisation then turns that into huge gradients
        (the runlocal ResNet diverged at hidden 32 / bottleneck 16). out_dim stays well above
        the bottleneck: at out_dim = bottleneck = 256 one bottleneck direction gives every
        output the same logit, and the runs collapsed onto it (loss = log K exactly)."""
        c.dino.out_dim = min(c.dino.out_dim, 4096)
        global_size = c.aug.view1.get("image_size") or c.dataset.image_size
        for name in view_names(c.aug)[NUM_GLOBAL_CROPS:]:
            c.aug[name].image_size = max(global_size // 2, 8)
        for name in view_names(c.aug)[:NUM_GLOBAL_CROPS]:
            c.aug[name].image_size = None
        if c.model.get("num_heads") is not None:     # the tiny ViT keeps its own head count
            c.model.num_heads = None

    def validate(self, config, ctx) -> None:
        d = config.dino
        for key in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            if d[key] <= 0:
                raise UserError(f"dino.{key} must be > 0, got {d[key]}.")
        if not 0.0 <= d.center_momentum <= 1.0:
            raise UserError(f"dino.center_momentum must be in [0, 1], got {d.center_momentum}.")
        if d.freeze_last_layer < 0 or d.warmup_teacher_temp_epochs < 0:
            raise UserError("dino.freeze_last_layer and dino.warmup_teacher_temp_epochs are "
                            "epochs: give values >= 0.")
        if min(d.out_dim, d.hidden_dim, d.bottleneck_dim, d.num_layers) < 1:
            raise UserError("dino.out_dim, hidden_dim, bottleneck_dim and num_layers must be "
                            ">= 1.")
        sizes = [config.aug[v].get("image_size") or config.dataset.image_size
                 for v in view_names(config.aug)[:NUM_GLOBAL_CROPS]]
        if sizes[0] != sizes[1]:
            raise UserError(f"aug.view1 and aug.view2 are the global crops and need one size, "
                            f"got {sizes[0]} and {sizes[1]}.")

    def build_network(self, config, num_classes: int):
        from simclr_jax.methods.network import SSLNetwork
        from simclr_jax.models import build_backbone
        d = config.dino
        head = DINOHead(hidden_dim=d.hidden_dim, bottleneck_dim=d.bottleneck_dim,
                        out_dim=d.out_dim, num_layers=d.num_layers,
                        norm_last_layer=d.norm_last_layer)
        return SSLNetwork(backbone=build_backbone(config.model), projector=head,
                          num_classes=num_classes if config.probe.enabled else 0)

    def init_state(self, config, network, variables, rng, ctx) -> dict:
        return {**common.init_target(variables),
                "center": jnp.zeros((1, config.dino.out_dim), jnp.float32)}        # [1, K]

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        d = config.dino
        views = [batch[v] for v in view_names(config.aug)]
        s_out, probe_out, probe_views, stats = student_forward(
            network, params, state.batch_stats, views, rng)                  # [V*B, K]
        t_out, ms = teacher_forward(network, state.method_state,
                                    views[:NUM_GLOBAL_CROPS])                # [G*B, K]
        b = views[0].shape[0]
        s_out = s_out.reshape(len(views), b, -1)                             # [V, B, K]
        t_out = t_out.reshape(NUM_GLOBAL_CROPS, b, -1)                       # [G, B, K]
        epoch = state.step // ctx.steps_per_epoch
        temp = teacher_temperature(epoch, d.warmup_teacher_temp, d.teacher_temp,
                                   d.warmup_teacher_temp_epochs)
        loss = dino_loss(s_out, t_out, ms["center"], d.student_temp, temp)
        ms = {**ms, "center": update_center(ms["center"], t_out, d.center_momentum)}
        probe, pm = common.probe_loss(probe_out, batch["label"], num_views=probe_views)
        return loss + probe, (stats, ms, {"loss": loss, "teacher_temp": temp, **pm})

    def after_update(self, network, config, state, ctx):
        return common.ema_update(config, state, ctx.total_steps)

    def param_groups(self, config, ctx) -> tuple:
        groups = probe_group(config) + frozen_backbone_groups(config)
        frozen = last_layer_frozen_steps(config, ctx)
        if frozen > 0:
            groups += (ParamGroup(("projector", LAST_LAYER), frozen_until_step=frozen),)
        return groups

    def encoder(self, config) -> EncoderSpec:
        from simclr_jax.models import build_backbone
        return EncoderSpec(backbone=build_backbone(config.model), variables=teacher_variables)


def last_layer_frozen_steps(config, ctx) -> int:
    """Steps during which the head's last layer gets no update: dino.freeze_last_layer epochs."""
    return int(round(config.dino.freeze_last_layer * ctx.steps_per_epoch))


METHOD: Any = DINO()
