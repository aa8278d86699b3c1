"""ViT backbone for MoCo v3 (ViT-S/16, ViT-B/16), after facebookresearch/moco-v3 vits.py.

What the reference does, and what this module does the same way:
- timm's VisionTransformer with the classifier head removed: patch embedding (conv p x p / p with
  bias) -> prepend a class token -> add a FIXED 2D sin-cos position embedding (zero for the class
  token) -> `depth` pre-norm blocks (x + Attn(LN(x)); x + MLP(LN(x))) -> final LayerNorm -> the
  class token is the feature vector [B, hidden_dim]. LayerNorm eps 1e-6, qkv with bias, MLP with
  exact (erf) GELU like PyTorch's nn.GELU, no dropout; no drop path by default (MoCo v3
  pre-training uses none; `drop_path_rate` turns on timm's stochastic depth, e.g. DINO's 0.1).
- MoCo v3 initialisation: every Linear xavier_uniform with zero bias; the qkv Linear is treated as
  three separate dim x dim matrices (bound sqrt(6 / (dim + dim))); the class token ~ N(0, 1e-6^2);
  the patch projection uniform with bound sqrt(6 / (3 p p + dim)) (xavier over the flattened
  kernel), zero bias. LayerNorms start at scale 1, bias 0.
- "Frozen random patch projection" (MoCo v3 sec. 5, `stop_grad_conv1`): the reference sets
  requires_grad=False, so the projection gets no gradient AND torch's AdamW skips it (no weight
  decay). Here `stop_grad_patch_embed=True` puts jax.lax.stop_gradient on the kernel and bias, so
  their gradient is exactly zero; decoupled weight decay would still move them, so the optimizer
  must leave them out: use `frozen_param_mask(params)` (or `ViT.frozen_param_mask`), e.g.
      tx = optax.chain(optax.adamw(lr, weight_decay=wd),
                       optax.masked(optax.set_to_zero(), frozen_param_mask(params)))

Deviations from the reference (where flax differs or the reference is ambiguous):
- Parameter layout is flax's: attention is nn.MultiHeadDotProductAttention with separate
  query/key/value/out DenseGeneral kernels ([D, heads, D/heads] and [heads, D/heads, D]) instead of
  one fused qkv [3D, D] matrix. The maths (and the init: DenseGeneral flattens the kernel to
  [D, D] before calling xavier_uniform) is the same; porting PyTorch weights needs a reshape.
- The position embedding is a constant computed from the grid at trace time, not a (frozen)
  parameter, so any image size divisible by the patch size works without interpolation. The
  reference builds it with torch.meshgrid(grid_w, grid_h) ("ij" indexing), which for its square
  grid gives token (row r, column c) the vector [sin(r w), cos(r w), sin(c w), cos(c w)]; we use
  exactly that for every grid, so non-square grids get the natural generalisation (the reference
  mixes up rows and columns when H != W).
- `pos_embed="learned"` (not MoCo v3's; for imported DINO / DeiT / timm weights): a parameter
  "pos_embed" [1, 1 + N, D] for the grid seen at init, added to the class token too, as timm;
  at another grid its patch part is resized bicubically (close to, not equal to, DINO's
  interpolate_pos_encoding, which uses torch's bicubic kernel).
- LayerNorm uses the two-pass variance (use_fast_variance=False), like PyTorch.
- The final features are returned in float32 whatever the compute `dtype` (as ResNet does).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from simclr_jax.errors import UserError

PATCH_EMBED = "patch_embed"                 # name of the (optionally frozen) patch projection
LN_EPS = 1e-6
POS_TEMPERATURE = 10000.0
CLS_INIT_STD = 1e-6
# nn.Dense / DenseGeneral hand kernel_init a 2D [fan_in, fan_out] shape (DenseGeneral flattens
# [D, heads, D/heads] to [D, D]), so xavier_uniform is MoCo v3's init for qkv (per q/k/v) and proj.
DENSE_INIT = nn.initializers.xavier_uniform()
# Conv kernel [p, p, C, D]: fan_in = p*p*C, fan_out = D -> bound sqrt(6 / (3 p p + D)) as MoCo v3.
PATCH_INIT = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2),
                                              out_axis=-1)


def build_2d_sincos_position_embedding(grid_h: int, grid_w: int, dim: int,
                                       temperature: float = POS_TEMPERATURE) -> np.ndarray:
    """MoCo v3's fixed position embedding [1 + grid_h*grid_w, dim] float32; row 0 (class token) = 0.

    Patch tokens are in row-major order (row r, column c) -> index 1 + r*grid_w + c, and get
    [sin(r w_k), cos(r w_k), sin(c w_k), cos(c w_k)] with w_k = temperature^(-k / (dim/4)).
    """
    if dim % 4 != 0:
        raise UserError(f"hidden_dim must be divisible by 4 for the 2D sin-cos position "
                         f"embedding, got {dim}")
    pos_dim = dim // 4
    omega = 1.0 / temperature ** (np.arange(pos_dim, dtype=np.float64) / pos_dim)   # [D/4]
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")  # [gh, gw]
    out_r = rows.reshape(-1, 1) * omega[None, :]                                    # [N, D/4]
    out_c = cols.reshape(-1, 1) * omega[None, :]                                    # [N, D/4]
    pos = np.concatenate([np.sin(out_r), np.cos(out_r), np.sin(out_c), np.cos(out_c)], axis=1)
    return np.concatenate([np.zeros((1, dim)), pos], axis=0).astype(np.float32)     # [1+N, D]


def frozen_param_mask(params: Any, stop_grad_patch_embed: bool = True) -> Any:
    """Pytree of bools like `params`: True for the frozen patch projection (kernel and bias).

    Works on any tree that contains the ViT's params (e.g. {"backbone": ..., "projector": ...}):
    a leaf is frozen when a key on its path is "patch_embed". With stop_grad_patch_embed=False
    every leaf is False. Use it to zero the optimizer's updates for those leaves (weight decay
    included), e.g. optax.masked(optax.set_to_zero(), mask) after AdamW.
    """
    def leaf(path, _):
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        return bool(stop_grad_patch_embed) and PATCH_EMBED in names

    return jax.tree_util.tree_map_with_path(leaf, params)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> hidden_dim (a stride-p conv with bias), optionally frozen.

    Written with explicit params instead of nn.Conv so stop_gradient can sit on the PARAMETERS:
    their gradient is then exactly zero (the input still gets a gradient, which costs nothing).
    """
    patch_size: int
    hidden_dim: int
    stop_gradient: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):                                                   # [B, H, W, C]
        p = self.patch_size
        kernel = self.param("kernel", PATCH_INIT, (p, p, x.shape[-1], self.hidden_dim),
                            jnp.float32)                                     # [p, p, C, D]
        bias = self.param("bias", nn.initializers.zeros, (self.hidden_dim,), jnp.float32)
        if self.stop_gradient:
            kernel, bias = jax.lax.stop_gradient(kernel), jax.lax.stop_gradient(bias)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel.astype(self.dtype), window_strides=(p, p),
            padding="VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))     # [B, H/p, W/p, D]
        return y + bias.astype(self.dtype)


class MLP(nn.Module):
    """fc1 -> exact GELU -> fc2 (timm Mlp, no dropout)."""
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):                                                   # [B, N, D]
        dense = lambda f, n: nn.Dense(f, kernel_init=DENSE_INIT, dtype=self.dtype,  # noqa: E731
                                      param_dtype=jnp.float32, name=n)
        h = nn.gelu(dense(self.mlp_dim, "fc1")(x), approximate=False)        # [B, N, M]
        return dense(x.shape[-1], "fc2")(h)                                  # [B, N, D]


def drop_path(module: nn.Module, x, rate: float, train: bool):
    """Stochastic depth (timm's / DINO's `drop_path`): in training, each example's residual
    branch is dropped with probability `rate` and kept ones are scaled by 1 / (1 - rate). The
    identity at rate 0, with train=False, and without a "dropout" RNG stream (an EMA teacher
    applied in training mode for its BN statistics draws none)."""
    if rate <= 0.0 or not train or not module.has_rng("dropout"):
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep,
                                (x.shape[0],) + (1,) * (x.ndim - 1))        # [B, 1, 1]
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


def layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype,
                        param_dtype=jnp.float32, name=name)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""
    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    drop_path_rate: float = 0.0          # stochastic depth of both residual branches

    @nn.compact
    def __call__(self, x, train: bool = False):                              # [B, N, D]
        attn = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, use_bias=True, kernel_init=DENSE_INIT,
            bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=jnp.float32,
            name="attn")
        y = attn(layer_norm(self.dtype, "norm1")(x), deterministic=True)
        x = x + drop_path(self, y, self.drop_path_rate, train)
        mlp = MLP(self.mlp_dim, dtype=self.dtype, name="mlp")
        return x + drop_path(self, mlp(layer_norm(self.dtype, "norm2")(x)),
                             self.drop_path_rate, train)


class ViT(nn.Module):
    """ViT backbone: images [B, H, W, 3] -> class-token features [B, hidden_dim] float32.

    H and W must be multiples of patch_size (grid = H/p x W/p). `stop_grad_patch_embed` freezes
    the random patch projection as MoCo v3 does (see the module docstring for the optimizer
    side). `dtype` is the compute dtype; parameters are float32.
    """
    hidden_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int = 16
    stop_grad_patch_embed: bool = False
    dtype: Any = jnp.float32
    pos_embed: str = "sincos"              # "sincos" (MoCo v3, fixed) | "learned" (timm, DINO)
    pos_embed_grid: int = 0                # learned: its g x g grid (0: the grid seen at init)
    drop_path_rate: float = 0.0            # stochastic depth, linear from 0 (first block) to
                                           # this (last block), timm's / DINO's decay rule

    @property
    def num_features(self) -> int:
        """Width of the features (readable without init)."""
        return self.hidden_dim

    def frozen_param_mask(self, params: Any) -> Any:
        """`frozen_param_mask(params, self.stop_grad_patch_embed)`: True for frozen leaves."""
        return frozen_param_mask(params, self.stop_grad_patch_embed)

    def check_config(self) -> None:
        if self.patch_size < 1:
            raise UserError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.hidden_dim % self.num_heads != 0:
            raise UserError(f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads "
                             f"({self.num_heads})")
        if self.pos_embed not in ("sincos", "learned"):
            raise UserError(f"ViT pos_embed must be 'sincos' or 'learned', got {self.pos_embed!r}")
        if self.hidden_dim % 4 != 0:
            raise UserError(f"hidden_dim must be divisible by 4 for the 2D sin-cos position "
                             f"embedding, got {self.hidden_dim}")

    def check_input(self, x) -> None:
        if x.ndim != 4:
            raise ValueError(f"ViT expects images [B, H, W, C], got shape {tuple(x.shape)}")
        h, w = x.shape[1], x.shape[2]
        if h % self.patch_size or w % self.patch_size:
            raise UserError(f"image size {h}x{w} is not divisible by the ViT patch size "
                             f"{self.patch_size}; resize/crop to a multiple of {self.patch_size} "
                             f"(e.g. {max(1, h // self.patch_size) * self.patch_size}) or change "
                             f"patch_size")

    @nn.compact
    def __call__(self, x, train: bool = False):                              # [B, H, W, C]
        # no BN; drop path (when drop_path_rate > 0) only in training, with a "dropout" RNG
        self.check_config()
        self.check_input(x)
        d = self.hidden_dim
        x = PatchEmbed(self.patch_size, d, self.stop_grad_patch_embed, self.dtype,
                       name=PATCH_EMBED)(x)                                  # [B, gh, gw, D]
        b, gh, gw, _ = x.shape
        x = x.reshape(b, gh * gw, d)                                         # [B, N, D] row-major
        cls = self.param("cls_token", nn.initializers.normal(CLS_INIT_STD), (1, 1, d), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, d)), x], axis=1)
        if self.pos_embed == "learned":
            x = x + learned_position_embedding(self, gh, gw, d,
                                               self.pos_embed_grid).astype(self.dtype)
        else:
            pos = build_2d_sincos_position_embedding(gh, gw, d)             # [1+N, D] constant
            x = x + jnp.asarray(pos, self.dtype)[None]                      # [B, 1+N, D]
        rates = np.linspace(0.0, self.drop_path_rate, self.depth)           # per block
        for i in range(self.depth):
            x = Block(self.num_heads, self.mlp_dim, dtype=self.dtype,
                      drop_path_rate=float(rates[i]), name=f"block_{i}")(x, train)
        x = layer_norm(self.dtype, "norm")(x)
        return x[:, 0].astype(jnp.float32)                                   # [B, D]


def learned_position_embedding(module: nn.Module, gh: int, gw: int, d: int, grid: int = 0):
    """timm's learned "pos_embed" [1, 1 + g*g, D] (g = `grid`, or the input's grid when 0);
    resized bicubically to (gh, gw) when the input's grid differs."""
    shape = (1, 1 + grid * grid, d) if grid else (1, 1 + gh * gw, d)
    if not grid and module.has_variable("params", "pos_embed"):   # applied at another grid
        pos = module.get_variable("params", "pos_embed")           # than the one seen at init
    else:
        pos = module.param("pos_embed", nn.initializers.normal(0.02), shape, jnp.float32)
    n = pos.shape[1] - 1
    if n == gh * gw:
        return pos
    g = int(round(np.sqrt(n)))
    grid = jax.image.resize(pos[0, 1:].reshape(g, g, d), (gh, gw, d), "bicubic")
    return jnp.concatenate([pos[:, :1], grid.reshape(1, gh * gw, d)], axis=1)


def vit_small(patch_size: int = 16, **kw) -> ViT:
    """MoCo v3 ViT-S: 384 dim, 12 blocks, 12 heads (DeiT-S has 6; MoCo v3 uses 12), MLP 1536."""
    return ViT(**{**dict(hidden_dim=384, depth=12, num_heads=12, mlp_dim=1536,
                          patch_size=patch_size), **kw})


def vit_base(patch_size: int = 16, **kw) -> ViT:
    """ViT-B: 768 dim, 12 blocks, 12 heads, MLP 3072."""
    return ViT(**{**dict(hidden_dim=768, depth=12, num_heads=12, mlp_dim=3072,
                          patch_size=patch_size), **kw})


def vit_tiny_test(patch_size: int = 4, **kw) -> ViT:
    """A 2-block, 32-dim ViT for fast tests (patch 4 suits 32 px images)."""
    return ViT(**{**dict(hidden_dim=32, depth=2, num_heads=4, mlp_dim=64,
                          patch_size=patch_size), **kw})


__all__ = ["ViT", "PatchEmbed", "Block", "MLP", "build_2d_sincos_position_embedding",
           "frozen_param_mask", "vit_small", "vit_base", "vit_tiny_test"]
