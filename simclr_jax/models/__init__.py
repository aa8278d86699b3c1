"""Backbones (ResNet, ViT), BatchNorm with optional groups, projection/prediction heads.

`build_backbone(model_cfg)` is the one place a config turns into a backbone module, so methods,
evaluation and export agree on the architecture.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.models import heads, norm, resnet, vit
from simclr_jax.models.heads import LinearHead, MLPHead
from simclr_jax.models.norm import BatchNorm
from simclr_jax.models.resnet import ResNet
from simclr_jax.errors import UserError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: Any) -> Any:
    """'float32' | 'bfloat16' | 'float16' (or a dtype) -> jnp dtype, with a clear error."""
    if not isinstance(name, str):
        return name
    if name not in DTYPES:
        raise UserError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def _build_resnet(cfg) -> nn.Module:
    if cfg.get("depth", None) is None:
        raise UserError("model.depth is required for model.name='resnet' (18, 34, 50, ...)")
    return ResNet(depth=int(cfg["depth"]), width_multiplier=float(cfg.get("width", 1.0)),
                  stem=cfg.get("stem", "imagenet"), sk_ratio=float(cfg.get("sk_ratio", 0.0)),
                  bn_group_size=cfg.get("bn_group_size", None),
                  dtype=compute_dtype(cfg.get("dtype", "float32")),
                  shortcut=cfg.get("shortcut", "on_shape_change"),
                  stem_pool_padding=cfg.get("stem_pool_padding", "torch"),
                  conv_init=cfg.get("conv_init", "fan_in_truncated_normal"),
                  zero_init_residual=bool(cfg.get("zero_init_residual", True)),
                  conv_padding=cfg.get("conv_padding", "torch"),
                  norm=cfg.get("norm", "batch"))


VIT_VARIANTS = {"small": vit.vit_small, "base": vit.vit_base, "tiny_test": vit.vit_tiny_test}


def _build_vit(cfg) -> nn.Module:
    variant = cfg.get("variant", "small")
    if variant not in VIT_VARIANTS:
        raise UserError(f"model.variant must be one of {sorted(VIT_VARIANTS)}, got {variant!r}")
    extra = {}     # imported timm / DINO ViTs: a learned position embedding, their head count
    if cfg.get("pos_embed", None) is not None:
        extra["pos_embed"] = cfg["pos_embed"]
    if cfg.get("pos_embed_grid", None) is not None:
        extra["pos_embed_grid"] = int(cfg["pos_embed_grid"])
    if cfg.get("num_heads", None) is not None:
        extra["num_heads"] = int(cfg["num_heads"])
    if cfg.get("drop_path_rate", None):
        extra["drop_path_rate"] = float(cfg["drop_path_rate"])
    return VIT_VARIANTS[variant](patch_size=int(cfg.get("patch_size", 16)),
                                 stop_grad_patch_embed=bool(cfg.get("stop_grad_patch_embed",
                                                                    False)),
                                 dtype=compute_dtype(cfg.get("dtype", "float32")), **extra)


def frozen_param_paths(model_cfg) -> tuple:
    """Paths (inside the backbone's params) that never train: ViT's frozen random patch
    projection (MoCo v3's stop_grad_patch_embed)."""
    if model_cfg.get("name") == "vit" and bool(model_cfg.get("stop_grad_patch_embed")):
        return ((vit.PATCH_EMBED,),)
    return ()


def frozen_param_mask(model_cfg, params):
    """True where a parameter must never move (MoCo v3's frozen random patch projection)."""
    frozen = model_cfg.get("name") == "vit" and bool(model_cfg.get("stop_grad_patch_embed"))
    return vit.frozen_param_mask(params, stop_grad_patch_embed=frozen)


BACKBONES: Dict[str, Callable[[Any], nn.Module]] = {"resnet": _build_resnet, "vit": _build_vit}


def build_backbone(model_cfg) -> nn.Module:
    """Backbone module for `model_cfg` (a ConfigDict or dict-like with `.get`).

    Fields: name ("resnet" | "vit"); ViT: variant ("small" | "base" | "tiny_test"), patch_size,
    stop_grad_patch_embed, pos_embed ("sincos" | "learned"), pos_embed_grid, num_heads (None: the variant's); ResNet: depth, width (multiplier), stem ("imagenet" | "cifar"),
    sk_ratio, bn_group_size (missing/None = global BN), dtype (optional compute dtype name),
    shortcut, stem_pool_padding, conv_init, zero_init_residual, conv_padding (which reference's
    ResNet), norm ("batch" when missing | "layer").
    The returned module maps images [B, H, W, 3] to features [B, num_features].
    """
    name = model_cfg.get("name", None)
    if name not in BACKBONES:
        raise UserError(f"unknown model.name {name!r}; valid names: {sorted(BACKBONES)}")
    return BACKBONES[name](model_cfg)


__all__ = ["BACKBONES", "BatchNorm", "LinearHead", "MLPHead", "ResNet", "build_backbone",
           "compute_dtype", "frozen_param_mask", "frozen_param_paths", "heads", "norm", "resnet", "vit"]
