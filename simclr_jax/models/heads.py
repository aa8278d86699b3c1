"""Projection / prediction MLPs for SimCLR, MoCo and BYOL, and a linear probe head.

One configurable `MLPHead`; the presets below pin down what each reference builds:

| preset              | Dense layers                 | Dense bias  | hidden BN | last BN          |
|---------------------|------------------------------|-------------|-----------|------------------|
| simclr_projector    | num_layers (v1 2, v2 3)      | no          | yes       | scale, no bias   |
| moco_v1_head        | 1 (linear)                   | yes         | -         | no               |
| moco_v2_head        | 2                            | yes         | no        | no               |
| moco_v3_projector   | num_layers (ResNet 2, ViT 3) | no          | yes       | no affine        |
| moco_v3_predictor   | 2                            | no          | yes       | ViT: no affine   |
| byol_projector/pred | 2                            | hidden only | yes       | no               |

Kernel initialisers follow each reference: SimCLR N(0, 0.01); MoCo (PyTorch nn.Linear)
U(+-1/sqrt(fan_in)); BYOL (Haiku) truncated normal with std 1/sqrt(fan_in). Biases start at 0.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.models.norm import BatchNorm
from simclr_jax.errors import UserError

Initializer = Callable[..., Any]
SIMCLR_INIT = nn.initializers.normal(0.01)
TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
HAIKU_LINEAR_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class MLPHead(nn.Module):
    """Hidden layers Dense -> (BN) -> ReLU; last layer Dense -> (BN).

    `return_all=True` returns every layer's output [input, h1, ..., out] so SimCLRv2
    fine-tuning can start from any layer of the projector (`ft_proj_selector`).
    """
    hidden_dims: Sequence[int]
    out_dim: int
    use_bn: bool = True               # BN after each hidden Dense
    use_bias: bool = False            # bias on the hidden Dense layers (and the last, see below)
    last_use_bias: Optional[bool] = None  # bias on the last Dense; None = same as use_bias
    last_bn: bool = True              # BN after the last Dense
    last_bn_affine: bool = True       # last BN has learnable scale (and bias, see below)
    last_bn_bias: bool = True         # with last_bn_affine: also a bias (SimCLR: False)
    bn_group_size: Optional[int] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    kernel_init: Initializer = SIMCLR_INIT
    dtype: Any = jnp.float32

    def _dense(self, features: int, name: str, bias: bool) -> nn.Dense:
        return nn.Dense(features, use_bias=bias, kernel_init=self.kernel_init,
                        dtype=self.dtype, param_dtype=jnp.float32, name=name)

    def _bn(self, name: str, scale: bool = True, bias: bool = True) -> BatchNorm:
        return BatchNorm(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                         group_size=self.bn_group_size, use_scale=scale, use_bias=bias,
                         name=name)

    @nn.compact
    def __call__(self, x, train: bool, return_all: bool = False):
        outputs = [x]                                                  # [B, D_in]
        for i, h in enumerate(self.hidden_dims):
            x = self._dense(h, f"dense{i}", self.use_bias)(x)          # [B, h]
            if self.use_bn:
                x = self._bn(f"bn{i}")(x, use_running_average=not train)
            x = nn.relu(x)
            outputs.append(x)
        n = len(self.hidden_dims)
        last_bias = self.use_bias if self.last_use_bias is None else self.last_use_bias
        x = self._dense(self.out_dim, f"dense{n}", last_bias)(x)       # [B, out_dim]
        if self.last_bn:
            affine = self.last_bn_affine
            x = self._bn(f"bn{n}", scale=affine, bias=affine and self.last_bn_bias)(
                x, use_running_average=not train)
        outputs.append(x)
        return outputs if return_all else x


class LinearHead(nn.Module):
    """Linear classifier (Dense with bias) for linear probes; N(0, 0.01) init as SimCLR/MoCo."""
    num_classes: int
    kernel_init: Initializer = SIMCLR_INIT

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init,
                        param_dtype=jnp.float32, name="dense")(x.astype(jnp.float32))


def _check_layers(num_layers: int) -> None:
    if num_layers < 1:
        raise UserError(f"a projection head needs num_layers >= 1, got {num_layers}")


def simclr_projector(num_layers: int = 2, hidden_dim: int = 2048, out_dim: int = 128,
                     bn_group_size: Optional[int] = None) -> MLPHead:
    """SimCLR v1 (2 layers) / v2 (3 layers): Dense(no bias)->BN->ReLU ..., Dense->BN(scale only)."""
    _check_layers(num_layers)
    return MLPHead(hidden_dims=(hidden_dim,) * (num_layers - 1), out_dim=out_dim, use_bn=True,
                   use_bias=False, last_bn=True, last_bn_affine=True, last_bn_bias=False,
                   bn_group_size=bn_group_size, kernel_init=SIMCLR_INIT)


def moco_v1_head(out_dim: int = 128) -> MLPHead:
    """MoCo v1: the backbone's fc replaced by a linear layer to out_dim (with bias)."""
    return MLPHead(hidden_dims=(), out_dim=out_dim, use_bn=False, use_bias=True, last_bn=False,
                   kernel_init=TORCH_LINEAR_INIT)


def moco_v2_head(hidden_dim: int = 2048, out_dim: int = 128) -> MLPHead:
    """MoCo v2: Linear -> ReLU -> Linear, with biases, no BN."""
    return MLPHead(hidden_dims=(hidden_dim,), out_dim=out_dim, use_bn=False, use_bias=True,
                   last_bn=False, kernel_init=TORCH_LINEAR_INIT)


def moco_v3_projector(hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 2,
                      bn_group_size: Optional[int] = None) -> MLPHead:
    """MoCo v3 projector (ResNet: 2 layers, ViT: 3): no biases, BN, last BN without affine."""
    _check_layers(num_layers)
    return MLPHead(hidden_dims=(hidden_dim,) * (num_layers - 1), out_dim=out_dim, use_bn=True,
                   use_bias=False, last_bn=True, last_bn_affine=False,
                   bn_group_size=bn_group_size, kernel_init=TORCH_LINEAR_INIT)


def moco_v3_predictor(hidden_dim: int = 4096, out_dim: int = 256, last_bn: bool = False,
                      bn_group_size: Optional[int] = None) -> MLPHead:
    """MoCo v3 predictor, 2 layers; last BN (no affine) only for ViT (`last_bn=True`)."""
    return MLPHead(hidden_dims=(hidden_dim,), out_dim=out_dim, use_bn=True, use_bias=False,
                   last_bn=last_bn, last_bn_affine=False, bn_group_size=bn_group_size,
                   kernel_init=TORCH_LINEAR_INIT)


def byol_projector(hidden_dim: int = 4096, out_dim: int = 256,
                   bn_group_size: Optional[int] = None) -> MLPHead:
    """BYOL projector: Linear(bias) -> BN -> ReLU -> Linear(no bias), no last BN."""
    return MLPHead(hidden_dims=(hidden_dim,), out_dim=out_dim, use_bn=True, use_bias=True,
                   last_use_bias=False, last_bn=False, bn_group_size=bn_group_size,
                   kernel_init=HAIKU_LINEAR_INIT)


def byol_predictor(hidden_dim: int = 4096, out_dim: int = 256,
                   bn_group_size: Optional[int] = None) -> MLPHead:
    """BYOL predictor: same architecture as the projector."""
    return byol_projector(hidden_dim=hidden_dim, out_dim=out_dim, bn_group_size=bn_group_size)


# Head kinds by what they are (config.head.kind): projector and, where the kind has one,
# the predictor paired with it. Which reference uses which is in the table at the top.
HEAD_KINDS = ("bn_mlp", "linear", "mlp", "bn_mlp_nonaffine", "bn_mlp_biased")


def build_heads(head_cfg, predictor_cfg, num_features: int,
                bn_group_size: Optional[int] = None):
    """(projector, predictor or None) for head_cfg.kind; sizes from head_cfg / predictor_cfg.

    "bn_mlp": BN MLP, last BN scale-only, no biases (SimCLR v1/v2), no predictor.
    "linear": one Dense with bias (MoCo v1). "mlp": Dense-ReLU-Dense with biases (MoCo v2).
    "bn_mlp_nonaffine": BN MLP, last BN without affine, + the same-style predictor (MoCo v3).
    "bn_mlp_biased": Dense(bias)-BN-ReLU-Dense, + a predictor of the same shape (BYOL).
    """
    kind = head_cfg.get("kind", "bn_mlp")
    hidden = head_cfg.hidden_dim if head_cfg.hidden_dim > 0 else num_features
    if kind == "bn_mlp":
        return simclr_projector(num_layers=head_cfg.num_layers, hidden_dim=hidden,
                                out_dim=head_cfg.out_dim, bn_group_size=bn_group_size), None
    if kind == "linear":
        return moco_v1_head(out_dim=head_cfg.out_dim), None
    if kind == "mlp":
        return moco_v2_head(hidden_dim=hidden, out_dim=head_cfg.out_dim), None
    if kind == "bn_mlp_nonaffine":
        return (moco_v3_projector(hidden_dim=hidden, out_dim=head_cfg.out_dim,
                                  num_layers=head_cfg.num_layers, bn_group_size=bn_group_size),
                moco_v3_predictor(hidden_dim=predictor_cfg.hidden_dim, out_dim=head_cfg.out_dim,
                                  last_bn=predictor_cfg.get("last_bn", False),
                                  bn_group_size=bn_group_size))
    if kind == "bn_mlp_biased":
        return (byol_projector(hidden_dim=hidden, out_dim=head_cfg.out_dim,
                               bn_group_size=bn_group_size),
                byol_predictor(hidden_dim=predictor_cfg.hidden_dim, out_dim=head_cfg.out_dim,
                               bn_group_size=bn_group_size))
    raise UserError(f"unknown head.kind {kind!r}; valid: {', '.join(HEAD_KINDS)}")
