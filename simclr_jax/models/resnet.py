"""ResNet v1.5 backbones (18 ... 200), width multiplier, CIFAR/ImageNet stems, SimCLRv2 SK variant.

Facts taken from the references (torchvision ResNet, SimCLR's `tf2/resnet.py`):
- v1.5: the stride of a bottleneck block sits on its 3x3 conv; convs have no bias; the last BN of
  every residual block starts with scale 0 so each block starts as the identity on its residual
  path; BN momentum 0.9 (flax convention), epsilon 1e-5.
- Conv kernels: VarianceScaling(1.0, "fan_in", "truncated_normal") -- the defaults of the
  `tf.keras.initializers.VarianceScaling()` SimCLR uses.
- Padding: k // 2 on each side (torchvision, and SimCLR's fixed padding for strided convs), so
  odd and even input sizes give the same alignment as the references. The stem max pool pads
  1 on each side (torchvision).
- Projection shortcut (1x1 conv with the block's stride + BN) only where the shape changes, so
  the parameter counts equal torchvision's (ResNet-18 11,176,512, ResNet-50 23,508,032).
- sk_ratio > 0 (SimCLRv2): the 3x3 conv of each bottleneck becomes a Selective Kernel conv, the
  ImageNet stem becomes the ResNet-D stem (3x3/2 -> 3x3 -> 3x3, widths 32, 32, 64 x width) and the
  projection shortcut becomes ResNet-D's 2x2 average pool (stride s) -> 1x1 conv -> BN.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.models.norm import BatchNorm
from simclr_jax.errors import UserError

# Blocks per stage. 10 (basic) and 14/26 (bottleneck) are the family's small members: cheap
# to compile, so the tests can run every preset's real step.
STAGE_SIZES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3),
               14: (1, 1, 1, 1), 26: (2, 2, 2, 2), 50: (3, 4, 6, 3),
               101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
BOTTLENECK_DEPTHS = frozenset({14, 26, 50, 101, 152, 200})
STEMS = ("imagenet", "cifar")
STAGE_WIDTHS = (64, 128, 256, 512)
CONV_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
SK_MIN_DIM = 32            # SimCLRv2: squeeze width = max(int(filters * sk_ratio), 32)


def scaled(channels: int, width_multiplier: float) -> int:
    """Channel count scaled by the width multiplier; at least 1 so tiny test models work."""
    return max(1, int(channels * width_multiplier))


def is_bottleneck(depth: int) -> bool:
    return depth in BOTTLENECK_DEPTHS


def num_features(depth: int, width_multiplier: float = 1.0) -> int:
    """Width C of the pooled features of ResNet-`depth` (2048 for ResNet-50 1x, 512 for 18)."""
    check_config(depth, "imagenet", width_multiplier, 0.0)
    return scaled(STAGE_WIDTHS[-1], width_multiplier) * (4 if is_bottleneck(depth) else 1)


def check_config(depth: int, stem: str, width_multiplier: float, sk_ratio: float) -> None:
    if depth not in STAGE_SIZES:
        raise UserError(f"ResNet depth must be one of {sorted(STAGE_SIZES)}, got {depth!r}")
    if stem not in STEMS:
        raise UserError(f"ResNet stem must be one of {STEMS}, got {stem!r}")
    if not width_multiplier > 0:
        raise UserError(f"width_multiplier must be > 0, got {width_multiplier!r}")
    if not sk_ratio >= 0:
        raise UserError(f"sk_ratio must be >= 0 (0 disables Selective Kernel), got {sk_ratio!r}")


def conv(features: int, kernel: int, strides: int = 1, *, dtype: Any, name: str) -> nn.Conv:
    """Bias-free conv with symmetric k // 2 padding (torchvision / SimCLR alignment)."""
    pad = ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)
    return nn.Conv(features, (kernel, kernel), (strides, strides), padding=(pad, pad),
                   use_bias=False, kernel_init=CONV_INIT, dtype=dtype,
                   param_dtype=jnp.float32, name=name)


class SelectiveKernel(nn.Module):
    """SimCLRv2's Selective Kernel conv (https://arxiv.org/abs/1903.06586).

    One 3x3 conv with 2x the channels is split into two streams (both 3x3, as in SimCLR);
    a squeeze of their sum picks per-channel softmax weights over the two streams.
    Includes its own BN + ReLU (it replaces conv + BN + ReLU of the bottleneck).
    """
    filters: int
    strides: int
    sk_ratio: float
    bn: Any                                # partial(BatchNorm, ...)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        x = conv(2 * self.filters, 3, self.strides, dtype=self.dtype, name="conv")(x)
        x = nn.relu(self.bn(name="bn")(x, use_running_average=ura))      # [B, H, W, 2F]
        streams = jnp.stack(jnp.split(x, 2, axis=-1))                      # [2, B, H, W, F]
        pooled = jnp.mean(streams.sum(0), axis=(1, 2), keepdims=True)      # [B, 1, 1, F]
        mid = max(int(self.filters * self.sk_ratio), SK_MIN_DIM)
        h = conv(mid, 1, dtype=self.dtype, name="squeeze_conv")(pooled)   # [B, 1, 1, mid]
        h = nn.relu(self.bn(name="squeeze_bn")(h, use_running_average=ura))
        logits = conv(2 * self.filters, 1, dtype=self.dtype, name="mix_conv")(h)
        mix = nn.softmax(jnp.stack(jnp.split(logits, 2, axis=-1)).astype(jnp.float32), axis=0)
        return jnp.sum(streams * mix.astype(streams.dtype), axis=0)        # [B, H, W, F]


class Shortcut(nn.Module):
    """Projection shortcut: 1x1 conv (stride s) + BN, or ResNet-D: 2x2 avg pool -> 1x1 conv + BN."""
    features: int
    strides: int
    resnet_d: bool
    bn: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        s = self.strides
        if self.resnet_d:
            if s > 1:   # SimCLR: zero-pad (0, 1), VALID 2x2 pool with stride s (pads counted)
                x = nn.avg_pool(x, (2, 2), (s, s), padding=((0, 1), (0, 1)))
            else:       # TF "SAME" 2x2/1 pool: pads (0, 1) but averages valid pixels only
                x = nn.avg_pool(x, (2, 2), (1, 1), padding=((0, 1), (0, 1)),
                                count_include_pad=False)
            s = 1
        x = conv(self.features, 1, s, dtype=self.dtype, name="conv")(x)
        return self.bn(name="bn")(x, use_running_average=not train)


class BasicBlock(nn.Module):
    """3x3 -> BN -> ReLU -> 3x3 -> BN(scale 0) + shortcut -> ReLU (ResNet-18/34)."""
    filters: int
    strides: int
    bn: Any
    resnet_d: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.filters:
            shortcut = Shortcut(self.filters, self.strides, self.resnet_d, self.bn, self.dtype,
                                name="shortcut")(x, train)
        y = conv(self.filters, 3, self.strides, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(self.bn(name="bn1")(y, use_running_average=ura))
        y = conv(self.filters, 3, dtype=self.dtype, name="conv2")(y)
        y = self.bn(name="bn2", scale_init=nn.initializers.zeros)(y, use_running_average=ura)
        return nn.relu(y + shortcut)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride; SK if sk_ratio > 0) -> 1x1 (4x) -> BN(scale 0) + shortcut -> ReLU."""
    filters: int
    strides: int
    bn: Any
    sk_ratio: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        out = 4 * self.filters
        shortcut = x
        if self.strides != 1 or x.shape[-1] != out:
            shortcut = Shortcut(out, self.strides, self.sk_ratio > 0, self.bn, self.dtype,
                                name="shortcut")(x, train)
        y = conv(self.filters, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(self.bn(name="bn1")(y, use_running_average=ura))
        if self.sk_ratio > 0:
            y = SelectiveKernel(self.filters, self.strides, self.sk_ratio, self.bn, self.dtype,
                                name="sk")(y, train)
        else:
            y = conv(self.filters, 3, self.strides, dtype=self.dtype, name="conv2")(y)
            y = nn.relu(self.bn(name="bn2")(y, use_running_average=ura))
        y = conv(out, 1, dtype=self.dtype, name="conv3")(y)
        y = self.bn(name="bn3", scale_init=nn.initializers.zeros)(y, use_running_average=ura)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """ResNet backbone: images [B, H, W, 3] -> globally average-pooled features [B, C] float32.

    `dtype` is the compute dtype (bfloat16 on accelerators); parameters and BN statistics stay
    float32. `bn_group_size` is passed to every BN (None: global batch statistics).
    """
    depth: int = 50
    width_multiplier: float = 1.0
    stem: str = "imagenet"
    sk_ratio: float = 0.0
    bn_group_size: Optional[int] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    def __post_init__(self):
        check_config(self.depth, self.stem, self.width_multiplier, self.sk_ratio)
        super().__post_init__()

    @property
    def num_features(self) -> int:
        """Width C of the output features, known without initialising the model."""
        return num_features(self.depth, self.width_multiplier)

    @nn.compact
    def __call__(self, x, train: bool):
        bn = partial(BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                     group_size=self.bn_group_size)
        ura = not train
        w = self.width_multiplier
        x = x.astype(self.dtype)                                            # [B, H, W, 3]

        if self.stem == "cifar":
            x = conv(scaled(64, w), 3, 1, dtype=self.dtype, name="stem_conv")(x)
            x = nn.relu(bn(name="stem_bn")(x, use_running_average=ura))    # [B, H, W, 64w]
        else:
            if self.sk_ratio > 0:   # ResNet-D stem: 3x3/2 (32w) -> 3x3 (32w) -> 3x3 (64w)
                half = max(1, scaled(64, w) // 2)
                for i, (c, s) in enumerate([(half, 2), (half, 1)]):
                    x = conv(c, 3, s, dtype=self.dtype, name=f"stem_conv{i}")(x)
                    x = nn.relu(bn(name=f"stem_bn{i}")(x, use_running_average=ura))
                x = conv(scaled(64, w), 3, 1, dtype=self.dtype, name="stem_conv")(x)
            else:
                x = conv(scaled(64, w), 7, 2, dtype=self.dtype, name="stem_conv")(x)
            x = nn.relu(bn(name="stem_bn")(x, use_running_average=ura))    # [B, H/2, W/2, 64w]
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))   # [B, H/4, W/4, 64w]

        for stage, (blocks, width) in enumerate(zip(STAGE_SIZES[self.depth], STAGE_WIDTHS)):
            for b in range(blocks):
                strides = 2 if stage > 0 and b == 0 else 1
                name = f"stage{stage + 1}_block{b + 1}"
                if is_bottleneck(self.depth):
                    x = BottleneckBlock(scaled(width, w), strides, bn, self.sk_ratio,
                                        self.dtype, name=name)(x, train)
                else:
                    x = BasicBlock(scaled(width, w), strides, bn, self.sk_ratio > 0,
                                   self.dtype, name=name)(x, train)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))                # [B, C]
