"""ResNet v1.5 backbones (18 ... 200), width multiplier, CIFAR/ImageNet stems, SimCLRv2 SK variant.

Facts taken from the references (torchvision ResNet, SimCLR's `tf2/resnet.py`):
- v1.5: the stride of a bottleneck block sits on its 3x3 conv; convs have no bias; the last BN of
  every residual block starts with scale 0 so each block starts as the identity on its residual
  path; BN momentum 0.9 (flax convention), epsilon 1e-5.
- Conv kernels (`conv_init`): "fan_in_truncated_normal" VarianceScaling(1.0, "fan_in",
  "truncated_normal"), the `tf.keras.initializers.VarianceScaling()` of SimCLR (and Haiku's
  default, BYOL);
  "torchvision" kaiming normal (fan_out, ReLU gain) as MoCo's torchvision ResNets.
  `zero_init_residual=False` keeps every BN scale at 1 (torchvision's default, MoCo v1/v2).
- Padding: k // 2 on each side (torchvision, and SimCLR's fixed padding for strided convs), so
  odd and even input sizes give the same alignment as the references. The stem max pool
  (`stem_pool_padding`): "torch" pads 1 on each side (torchvision, MoCo); "same" is TF's SAME,
  (0, 1) on even sizes (SimCLR tf2, BYOL).
- Conv padding (`conv_padding`): "torch" as above; "same" is TF/Haiku SAME on every conv, which
  on even sizes pads a strided 7x7 (2, 3) and a strided 3x3 (0, 1): BYOL's Haiku ResNet (its
  released weights compute their published accuracy only with it, deepmind-research #84).
- Projection shortcut (1x1 conv with the block's stride + BN), `shortcut`: "on_shape_change"
  (torchvision: ResNet-18 11,176,512, ResNet-50 23,508,032 parameters) or
  "first_block_of_stage" (SimCLR tf2's `use_projection=True` on every stage's first block,
  which adds one to stage 1 of the basic-block nets: ResNet-18 CIFAR stem 11,173,056).
- ResNet-161 (CPC v2, Henaff et al. 2020): the first three stacks of ResNet-101 with the third
  converted to 46 blocks of 512-wide bottlenecks and 4096-channel outputs (expansion 8); three
  stages, 4096 features.
- sk_ratio > 0 (SimCLRv2): the 3x3 conv of each bottleneck becomes a Selective Kernel conv, the
  ImageNet stem becomes the ResNet-D stem (3x3/2 -> 3x3 -> 3x3, widths 32, 32, 64 x width) and the
  projection shortcut becomes ResNet-D's 2x2 average pool (stride s) -> 1x1 conv -> BN.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.models.norm import BatchNorm, LayerNorm
from simclr_jax.errors import UserError

# Blocks per stage. 10 (basic) and 14/26 (bottleneck) are the family's small members: cheap
# to compile, so the tests can run every preset's real step.
STAGE_SIZES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3),
               14: (1, 1, 1, 1), 26: (2, 2, 2, 2), 50: (3, 4, 6, 3),
               101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3),
               161: (3, 4, 46)}
BOTTLENECK_DEPTHS = frozenset({14, 26, 50, 101, 152, 200, 161})
STEMS = ("imagenet", "cifar")
STAGE_WIDTHS = (64, 128, 256, 512)
# Depths whose stages differ from STAGE_WIDTHS / a 4x bottleneck expansion (per stage).
CUSTOM_STAGE_WIDTHS = {161: (64, 128, 512)}
CUSTOM_EXPANSIONS = {161: (4, 4, 8)}
CONV_INITS = {"fan_in_truncated_normal": nn.initializers.variance_scaling(1.0, "fan_in",
                                                                         "truncated_normal"),
              "torchvision": nn.initializers.variance_scaling(2.0, "fan_out", "normal")}
CONV_INIT = CONV_INITS["fan_in_truncated_normal"]
SHORTCUTS = ("on_shape_change", "first_block_of_stage")
POOL_PADDINGS = ("torch", "same")
CONV_PADDINGS = ("torch", "same")
NORMS = ("batch", "layer")   # "layer": per-example LayerNorm, no batch_stats (CPC v2)
SK_MIN_DIM = 32            # SimCLRv2: squeeze width = max(int(filters * sk_ratio), 32)


def scaled(channels: int, width_multiplier: float) -> int:
    """Channel count scaled by the width multiplier; at least 1 so tiny test models work."""
    return max(1, int(channels * width_multiplier))


def is_bottleneck(depth: int) -> bool:
    return depth in BOTTLENECK_DEPTHS


def stage_widths(depth: int) -> tuple:
    """Bottleneck (or basic block) width of each stage at width 1x."""
    return CUSTOM_STAGE_WIDTHS.get(depth, STAGE_WIDTHS)[:len(STAGE_SIZES[depth])]


def expansions(depth: int) -> tuple:
    """Output channels / block width of each stage (4 for bottlenecks, 1 for basic blocks)."""
    default = (4 if is_bottleneck(depth) else 1,) * len(STAGE_SIZES[depth])
    return CUSTOM_EXPANSIONS.get(depth, default)


def num_features(depth: int, width_multiplier: float = 1.0) -> int:
    """Width C of the pooled features of ResNet-`depth` (2048 for ResNet-50 1x, 512 for 18,
    4096 for ResNet-161)."""
    check_config(depth, "imagenet", width_multiplier, 0.0)
    return scaled(stage_widths(depth)[-1], width_multiplier) * expansions(depth)[-1]


def check_config(depth: int, stem: str, width_multiplier: float, sk_ratio: float,
                 shortcut: str = "on_shape_change", stem_pool_padding: str = "torch",
                 conv_init: str = "fan_in_truncated_normal", conv_padding: str = "torch") -> None:
    if depth not in STAGE_SIZES:
        raise UserError(f"ResNet depth must be one of {sorted(STAGE_SIZES)}, got {depth!r}")
    if stem not in STEMS:
        raise UserError(f"ResNet stem must be one of {STEMS}, got {stem!r}")
    if not width_multiplier > 0:
        raise UserError(f"width_multiplier must be > 0, got {width_multiplier!r}")
    if not sk_ratio >= 0:
        raise UserError(f"sk_ratio must be >= 0 (0 disables Selective Kernel), got {sk_ratio!r}")
    for field, value, valid in (("shortcut", shortcut, SHORTCUTS),
                                ("stem_pool_padding", stem_pool_padding, POOL_PADDINGS),
                                ("conv_init", conv_init, tuple(CONV_INITS)),
                                ("conv_padding", conv_padding, CONV_PADDINGS)):
        if value not in valid:
            raise UserError(f"ResNet {field} must be one of {valid}, got {value!r}")
    if conv_padding == "same" and sk_ratio > 0:
        raise UserError("conv_padding='same' is for plain ResNets (Haiku's); SK-ResNets follow "
                        "SimCLR's fixed padding")


def conv(features: int, kernel: int, strides: int = 1, *, dtype: Any, name: str,
         kernel_init: Any = CONV_INIT, padding: str = "torch") -> nn.Conv:
    """Bias-free conv with symmetric k // 2 padding (torchvision / SimCLR alignment), or TF SAME
    (padding="same", Haiku's)."""
    pad = ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)
    return nn.Conv(features, (kernel, kernel), (strides, strides),
                   padding="SAME" if padding == "same" else (pad, pad),
                   use_bias=False, kernel_init=kernel_init, dtype=dtype,
                   param_dtype=jnp.float32, name=name)


def stem_max_pool(x, padding: str):
    """3x3 / 2 max pool of the ImageNet stem. "torch": pad 1 on each side (torchvision);
    "same": TF SAME (SimCLR tf2, BYOL): out = ceil(H / 2), total pad max(2 (out - 1) + 3 - H, 0),
    total // 2 before, the rest after: (0, 1) on even sizes. Padding is -inf (never the max)."""
    return nn.max_pool(x, (3, 3), (2, 2),
                       padding="SAME" if padding == "same" else ((1, 1), (1, 1)))


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
    kernel_init: Any = CONV_INIT

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        c = partial(conv, dtype=self.dtype, kernel_init=self.kernel_init)
        x = c(2 * self.filters, 3, self.strides, name="conv")(x)
        x = nn.relu(self.bn(name="bn")(x, use_running_average=ura))      # [B, H, W, 2F]
        streams = jnp.stack(jnp.split(x, 2, axis=-1))                      # [2, B, H, W, F]
        pooled = jnp.mean(streams.sum(0), axis=(1, 2), keepdims=True)      # [B, 1, 1, F]
        mid = max(int(self.filters * self.sk_ratio), SK_MIN_DIM)
        h = c(mid, 1, name="squeeze_conv")(pooled)                         # [B, 1, 1, mid]
        h = nn.relu(self.bn(name="squeeze_bn")(h, use_running_average=ura))
        logits = c(2 * self.filters, 1, name="mix_conv")(h)
        mix = nn.softmax(jnp.stack(jnp.split(logits, 2, axis=-1)).astype(jnp.float32), axis=0)
        return jnp.sum(streams * mix.astype(streams.dtype), axis=0)        # [B, H, W, F]


class Shortcut(nn.Module):
    """Projection shortcut: 1x1 conv (stride s) + BN, or ResNet-D: 2x2 avg pool -> 1x1 conv + BN."""
    features: int
    strides: int
    resnet_d: bool
    bn: Any
    dtype: Any = jnp.float32
    kernel_init: Any = CONV_INIT

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
        x = conv(self.features, 1, s, dtype=self.dtype, kernel_init=self.kernel_init,
                 name="conv")(x)
        return self.bn(name="bn")(x, use_running_average=not train)


def _last_bn_scale_init(zero_init_residual: bool):
    return nn.initializers.zeros if zero_init_residual else nn.initializers.ones


class BasicBlock(nn.Module):
    """3x3 -> BN -> ReLU -> 3x3 -> BN(scale 0) + shortcut -> ReLU (ResNet-18/34)."""
    filters: int
    strides: int
    bn: Any
    resnet_d: bool = False
    dtype: Any = jnp.float32
    kernel_init: Any = CONV_INIT
    zero_init_residual: bool = True
    project_shortcut: bool = False     # a projection even when the shape does not change
    conv_padding: str = "torch"

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        c = partial(conv, dtype=self.dtype, kernel_init=self.kernel_init,
                    padding=self.conv_padding)
        shortcut = x
        if self.project_shortcut or self.strides != 1 or x.shape[-1] != self.filters:
            shortcut = Shortcut(self.filters, self.strides, self.resnet_d, self.bn, self.dtype,
                                self.kernel_init, name="shortcut")(x, train)
        y = c(self.filters, 3, self.strides, name="conv1")(x)
        y = nn.relu(self.bn(name="bn1")(y, use_running_average=ura))
        y = c(self.filters, 3, name="conv2")(y)
        y = self.bn(name="bn2", scale_init=_last_bn_scale_init(self.zero_init_residual))(
            y, use_running_average=ura)
        return nn.relu(y + shortcut)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride; SK if sk_ratio > 0) -> 1x1 (`expansion` x, 4 but in ResNet-161's
    third stage) -> BN(scale 0) + shortcut -> ReLU."""
    filters: int
    strides: int
    bn: Any
    sk_ratio: float = 0.0
    dtype: Any = jnp.float32
    kernel_init: Any = CONV_INIT
    zero_init_residual: bool = True
    project_shortcut: bool = False
    conv_padding: str = "torch"
    expansion: int = 4

    @nn.compact
    def __call__(self, x, train: bool):
        ura = not train
        c = partial(conv, dtype=self.dtype, kernel_init=self.kernel_init,
                    padding=self.conv_padding)
        out = self.expansion * self.filters
        shortcut = x
        if self.project_shortcut or self.strides != 1 or x.shape[-1] != out:
            shortcut = Shortcut(out, self.strides, self.sk_ratio > 0, self.bn, self.dtype,
                                self.kernel_init, name="shortcut")(x, train)
        y = c(self.filters, 1, name="conv1")(x)
        y = nn.relu(self.bn(name="bn1")(y, use_running_average=ura))
        if self.sk_ratio > 0:
            y = SelectiveKernel(self.filters, self.strides, self.sk_ratio, self.bn, self.dtype,
                                self.kernel_init, name="sk")(y, train)
        else:
            y = c(self.filters, 3, self.strides, name="conv2")(y)
            y = nn.relu(self.bn(name="bn2")(y, use_running_average=ura))
        y = c(out, 1, name="conv3")(y)
        y = self.bn(name="bn3", scale_init=_last_bn_scale_init(self.zero_init_residual))(
            y, use_running_average=ura)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """ResNet backbone: images [B, H, W, 3] -> globally average-pooled features [B, C] float32.

    `dtype` is the compute dtype (bfloat16 on accelerators); parameters and BN statistics stay
    float32. `bn_group_size` is passed to every BN (None: global batch statistics).
    `shortcut`, `stem_pool_padding`, `conv_init`, `zero_init_residual`, `conv_padding`: which
    reference's architecture and initialisation (module docstring).
    `norm`: "batch" (every model above) or "layer" (LayerNorm over each example's H, W, C in
    place of every BN, scale and bias only: no batch_stats, no statistic across examples).
    """
    depth: int = 50
    width_multiplier: float = 1.0
    stem: str = "imagenet"
    sk_ratio: float = 0.0
    bn_group_size: Optional[int] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    shortcut: str = "on_shape_change"
    stem_pool_padding: str = "torch"
    conv_init: str = "fan_in_truncated_normal"
    zero_init_residual: bool = True
    conv_padding: str = "torch"
    norm: str = "batch"
    stem_width: Optional[int] = None   # stem conv channels; None = 64 x width (a ResNet
                                       # whose stem stays at 64 at every width sets 64)

    def __post_init__(self):
        check_config(self.depth, self.stem, self.width_multiplier, self.sk_ratio, self.shortcut,
                     self.stem_pool_padding, self.conv_init, self.conv_padding)
        if self.norm not in NORMS:
            raise UserError(f"ResNet norm must be one of {NORMS}, got {self.norm!r}")
        super().__post_init__()

    @property
    def num_features(self) -> int:
        """Width C of the output features, known without initialising the model."""
        return num_features(self.depth, self.width_multiplier)

    @nn.compact
    def __call__(self, x, train: bool):
        if self.norm == "layer":
            bn = partial(LayerNorm, epsilon=self.bn_epsilon)
        else:
            bn = partial(BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                         group_size=self.bn_group_size)
        kernel_init = CONV_INITS[self.conv_init]
        c = partial(conv, dtype=self.dtype, kernel_init=kernel_init, padding=self.conv_padding)
        ura = not train
        w = self.width_multiplier
        x = x.astype(self.dtype)                                            # [B, H, W, 3]
        stem_width = self.stem_width or scaled(64, w)

        if self.stem == "cifar":
            x = c(stem_width, 3, 1, name="stem_conv")(x)
            x = nn.relu(bn(name="stem_bn")(x, use_running_average=ura))    # [B, H, W, 64w]
        else:
            if self.sk_ratio > 0:   # ResNet-D stem: 3x3/2 (32w) -> 3x3 (32w) -> 3x3 (64w)
                half = max(1, scaled(64, w) // 2)
                for i, (ch, s) in enumerate([(half, 2), (half, 1)]):
                    x = c(ch, 3, s, name=f"stem_conv{i}")(x)
                    x = nn.relu(bn(name=f"stem_bn{i}")(x, use_running_average=ura))
                x = c(scaled(64, w), 3, 1, name="stem_conv")(x)
            else:
                x = c(stem_width, 7, 2, name="stem_conv")(x)
            x = nn.relu(bn(name="stem_bn")(x, use_running_average=ura))    # [B, H/2, W/2, 64w]
            x = stem_max_pool(x, self.stem_pool_padding)                    # [B, H/4, W/4, 64w]

        for stage, (blocks, width, expansion) in enumerate(zip(
                STAGE_SIZES[self.depth], stage_widths(self.depth), expansions(self.depth))):
            for b in range(blocks):
                strides = 2 if stage > 0 and b == 0 else 1
                project = self.shortcut == "first_block_of_stage" and b == 0
                name = f"stage{stage + 1}_block{b + 1}"
                common = dict(dtype=self.dtype, kernel_init=kernel_init,
                              zero_init_residual=self.zero_init_residual,
                              project_shortcut=project, conv_padding=self.conv_padding,
                              name=name)
                if is_bottleneck(self.depth):
                    x = BottleneckBlock(scaled(width, w), strides, bn, self.sk_ratio,
                                        expansion=expansion, **common)(x, train)
                else:
                    x = BasicBlock(scaled(width, w), strides, bn, self.sk_ratio > 0,
                                   **common)(x, train)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))                # [B, C]
