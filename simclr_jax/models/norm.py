"""Batch normalisation over the whole batch or over fixed-size groups of examples.

Why not `nn.BatchNorm`: MoCo v1/v2 need per-GPU BN ("shuffle BN"), i.e. statistics over groups
of `group_size` consecutive examples. Reshaping [B, ...] -> [B // g, g, ...] reproduces that
independently of how many devices run the job. With `group_size=None` the statistics cover the
whole batch; under `jit` with a batch sharded over devices that batch is the *global* batch, so
this is cross-replica (SimCLR "global", MoCo v3 "SyncBN") BN without any `axis_name`.

Conventions follow `flax.linen.BatchNorm`: variables "batch_stats"/{"mean", "var"} and
"params"/{"scale", "bias"}; running update `ra = momentum * ra + (1 - momentum) * batch_stat`;
the biased batch variance E[x^2] - E[x]^2 (clipped at 0); statistics always in float32.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp
from simclr_jax.errors import UserError

Initializer = Callable[..., Any]


def check_group_size(batch: int, group_size: Optional[int]) -> None:
    """Raise a ValueError unless `group_size` splits `batch` into whole groups."""
    if group_size is None:
        return
    if not isinstance(group_size, int) or group_size < 1:
        raise UserError(f"bn_group_size must be a positive int or None, got {group_size!r}")
    if batch % group_size != 0:
        raise UserError(
            f"batch size {batch} is not divisible by bn_group_size {group_size}; choose a "
            f"group size that divides every batch fed to the model (or None for global BN)")


class BatchNorm(nn.Module):
    """BN over the channel (last) axis; statistics over the batch (or its groups) and space."""

    momentum: float = 0.9
    epsilon: float = 1e-5
    group_size: Optional[int] = None      # None: whole batch; g: groups of g consecutive examples
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros
    dtype: Optional[Any] = None           # output dtype; None keeps the input's
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, use_running_average: bool):
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean",
                                lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var",
                               lambda: jnp.ones((features,), jnp.float32))
        x32 = x.astype(jnp.float32)

        if use_running_average:
            mean, var = ra_mean.value, ra_var.value                      # [C]
        elif self.group_size is None:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x32, axis=axes)                              # [C]
            var = jnp.maximum(jnp.mean(jnp.square(x32), axis=axes) - jnp.square(mean), 0.0)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        else:
            check_group_size(x.shape[0], self.group_size)
            g = self.group_size
            xg = x32.reshape((x.shape[0] // g, g) + x.shape[1:])         # [G, g, ..., C]
            axes = tuple(range(1, xg.ndim - 1))
            g_mean = jnp.mean(xg, axis=axes, keepdims=True)              # [G, 1, ..., 1, C]
            g_var = jnp.maximum(jnp.mean(jnp.square(xg), axis=axes, keepdims=True)
                                - jnp.square(g_mean), 0.0)
            if not self.is_initializing():
                flat = (-1, features)
                ra_mean.value = (self.momentum * ra_mean.value
                                 + (1 - self.momentum) * g_mean.reshape(flat).mean(0))
                ra_var.value = (self.momentum * ra_var.value
                                + (1 - self.momentum) * g_var.reshape(flat).mean(0))
            x32, mean, var = xg, g_mean, g_var        # normalise in group layout

        mul = jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        if self.use_scale:
            mul = mul * self.param("scale", self.scale_init, (features,), self.param_dtype)
        y = (x32 - mean) * mul
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (features,), self.param_dtype)
        return y.reshape(x.shape).astype(self.dtype or x.dtype)


class LayerNorm(nn.Module):
    """Layer normalisation of each example over all its non-batch axes (H, W, C of a feature
    map), with a per-channel scale and bias: no statistic crosses examples, so no batch_stats.

    It takes BatchNorm's call signature (`use_running_average` is accepted and ignored) so a
    network can swap one for the other. Why: patch-based methods (CPC v2) must not let BN's
    batch statistics leak information between the patches of one image.
    """

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros
    dtype: Optional[Any] = None           # output dtype; None keeps the input's
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, use_running_average: bool = False):
        del use_running_average                                          # no running statistics
        features = x.shape[-1]
        x32 = x.astype(jnp.float32)
        axes = tuple(range(1, x.ndim))                                   # all but the batch axis
        mean = jnp.mean(x32, axis=axes, keepdims=True)                   # [B, 1, ..., 1]
        var = jnp.maximum(jnp.mean(jnp.square(x32), axis=axes, keepdims=True)
                          - jnp.square(mean), 0.0)
        y = (x32 - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        if self.use_scale:
            y = y * self.param("scale", self.scale_init, (features,), self.param_dtype)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (features,), self.param_dtype)
        return y.astype(self.dtype or x.dtype)
