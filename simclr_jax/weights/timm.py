"""Our ViT <-> timm VisionTransformer names (`patch_embed.proj`, `cls_token`, `pos_embed`,
`blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`), as MoCo v3's vits.py
(a timm VisionTransformer subclass) saves them.

Layouts: timm fuses q, k, v into one Linear `qkv` [3D, D] whose output is read as
(3, heads, D/heads); flax's attention has query/key/value kernels [D, heads, D/heads] and an
output kernel [heads, D/heads, D]. A Linear weight is [out, in], a flax Dense kernel [in, out].

Same function: pre-norm blocks, LayerNorm eps 1e-6, exact GELU, class-token features after the
final norm, as timm with `num_classes=0, global_pool="token"`. Two things a state dict does not
say, and that decide the function:
- the position embedding: ours is MoCo v3's fixed 2D sin-cos (zero for the class token), not a
  parameter; export writes it as `pos_embed` for `image_size`, import checks the file's is that
  (a learned one, e.g. DINO's or timm's pretrained, is refused: our ViT cannot hold it);
- the number of heads: MoCo v3's ViT-S has 12 heads, timm's `vit_small_patch16_224` (DeiT-S) 6.
  Both load the same names and shapes strictly, but only a VisionTransformer built with our head
  count computes our function (`timm_constructor` gives the arguments).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.models import vit as vit_lib
from simclr_jax.weights import torchvision as tv

StateDict = Dict[str, np.ndarray]
# our variant -> (timm model name of the same shapes, embed_dim, depth, our num_heads, mlp_dim)
VARIANTS = {"small": ("vit_small_patch16_224", 384, 12, 12, 1536),
            "base": ("vit_base_patch16_224", 768, 12, 12, 3072),
            "tiny_test": (None, 32, 2, 4, 64)}
# heads of the learned-position-embedding family (timm / DeiT / DINO: ViT-S has 6)
LEARNED_HEADS = {"small": 6, "base": 12, "tiny_test": 4}
SINCOS_ATOL = 1e-4


def _dims(model_cfg):
    variant = model_cfg.get("variant", "small")
    if variant not in VARIANTS:
        raise UserError(f"ViT variant {variant!r} has no timm layout; known: {sorted(VARIANTS)}")
    _, d, depth, heads, mlp = VARIANTS[variant]
    heads = int(model_cfg.get("num_heads") or heads)
    return d, depth, heads, mlp, int(model_cfg.get("patch_size", 16))


def timm_constructor(model_cfg, image_size: int) -> dict:
    """kwargs of timm.models.vision_transformer.VisionTransformer computing our function."""
    d, depth, heads, mlp, p = _dims(model_cfg)
    return {"img_size": int(image_size), "patch_size": p, "embed_dim": d, "depth": depth,
            "num_heads": heads, "mlp_ratio": mlp / d, "qkv_bias": True, "num_classes": 0,
            "global_pool": "token"}


def timm_notes(model_cfg, image_size: int) -> list:
    name = VARIANTS.get(model_cfg.get("variant", "small"), (None,))[0]
    kw = ", ".join(f"{k}={v!r}" for k, v in timm_constructor(model_cfg, image_size).items())
    learned = model_cfg.get("pos_embed", "sincos") == "learned"
    notes = [f"load into timm.models.vision_transformer.VisionTransformer({kw}) with "
             f"load_state_dict(strict=True)" + ("" if learned else "; pos_embed is the fixed 2D "
                                                "sin-cos embedding (keep it frozen)")]
    if name and not learned:
        notes.append(f"{name} has the same names and shapes but "
                     f"{'6' if name.startswith('vit_small') else '12'} heads"
                     + (": only num_heads=12 computes this model's function"
                        if name.startswith("vit_small") else ""))
    return notes


def check_standard(model_cfg) -> None:
    if model_cfg.get("name") != "vit":
        raise UserError(f"--format timm holds ViTs; this encoder is a {model_cfg.get('name')!r} "
                        f"(use --format torchvision or detectron2 for a ResNet)")
    _dims(model_cfg)


def to_torch(model_cfg, variables, image_size: int = 224) -> StateDict:
    """Our ViT variables -> timm VisionTransformer state dict (num_classes=0), float32."""
    d, depth, heads, _, p = _dims(model_cfg)
    if image_size % p:
        raise UserError(f"image_size {image_size} is not a multiple of the patch size {p}")
    P = {k: v for k, v in variables["params"].items()}
    f32 = lambda a: np.asarray(a, np.float32)                                     # noqa: E731
    g = image_size // p
    sd: StateDict = {
        "cls_token": f32(P["cls_token"]),                                         # [1, 1, D]
        "pos_embed": (f32(P["pos_embed"]) if "pos_embed" in P else                 # [1, 1+N, D]
                      vit_lib.build_2d_sincos_position_embedding(g, g, d)[None]),
        "patch_embed.proj.weight": np.transpose(f32(P["patch_embed"]["kernel"]),
                                                (3, 2, 0, 1)),                    # [D, 3, p, p]
        "patch_embed.proj.bias": f32(P["patch_embed"]["bias"]),
        "norm.weight": f32(P["norm"]["scale"]), "norm.bias": f32(P["norm"]["bias"])}
    for i in range(depth):
        b, t = P[f"block_{i}"], f"blocks.{i}."
        a = b["attn"]
        sd[t + "norm1.weight"], sd[t + "norm1.bias"] = f32(b["norm1"]["scale"]), f32(b["norm1"]["bias"])
        sd[t + "norm2.weight"], sd[t + "norm2.bias"] = f32(b["norm2"]["scale"]), f32(b["norm2"]["bias"])
        sd[t + "attn.qkv.weight"] = np.concatenate(
            [f32(a[n]["kernel"]).reshape(d, d).T for n in ("query", "key", "value")])  # [3D, D]
        sd[t + "attn.qkv.bias"] = np.concatenate(
            [f32(a[n]["bias"]).reshape(d) for n in ("query", "key", "value")])       # [3D]
        sd[t + "attn.proj.weight"] = f32(a["out"]["kernel"]).reshape(d, d).T       # [D, H*hd]
        sd[t + "attn.proj.bias"] = f32(a["out"]["bias"])
        for fc in ("fc1", "fc2"):
            sd[t + f"mlp.{fc}.weight"] = f32(b["mlp"][fc]["kernel"]).T             # [out, in]
            sd[t + f"mlp.{fc}.bias"] = f32(b["mlp"][fc]["bias"])
    return sd


def from_torch(model_cfg, state_dict: StateDict) -> dict:
    """timm ViT state dict (prefix removed; `head.*` ignored) -> our variables {"params": ...}."""
    d, depth, heads, _, p = _dims(model_cfg)
    shapes = tv.variable_shapes(model_cfg)["params"]
    used = set()
    take = lambda n: tv._take(state_dict, n, used)                                # noqa: E731
    hd = d // heads
    pos = take("pos_embed")
    learned = model_cfg.get("pos_embed", "sincos") == "learned"
    if not learned:
        _check_pos_embed(pos, d)
    params = {"cls_token": take("cls_token"),
              "patch_embed": {"kernel": np.transpose(take("patch_embed.proj.weight"),
                                                     (2, 3, 1, 0)),               # [p, p, 3, D]
                              "bias": take("patch_embed.proj.bias")},
              "norm": {"scale": take("norm.weight"), "bias": take("norm.bias")}}
    for i in range(depth):
        t = f"blocks.{i}."
        qkv_w, qkv_b = take(t + "attn.qkv.weight"), take(t + "attn.qkv.bias")    # [3D, D], [3D]
        tv._check_shape(t + "attn.qkv.weight", qkv_w.shape, (3 * d, d))
        attn = {n: {"kernel": qkv_w[j * d:(j + 1) * d].T.reshape(d, heads, hd),   # [D, H, hd]
                    "bias": qkv_b[j * d:(j + 1) * d].reshape(heads, hd)}
                for j, n in enumerate(("query", "key", "value"))}
        attn["out"] = {"kernel": take(t + "attn.proj.weight").T.reshape(heads, hd, d),
                       "bias": take(t + "attn.proj.bias")}
        params[f"block_{i}"] = {
            "norm1": {"scale": take(t + "norm1.weight"), "bias": take(t + "norm1.bias")},
            "norm2": {"scale": take(t + "norm2.weight"), "bias": take(t + "norm2.bias")},
            "attn": attn,
            "mlp": {fc: {"kernel": take(t + f"mlp.{fc}.weight").T,
                         "bias": take(t + f"mlp.{fc}.bias")} for fc in ("fc1", "fc2")}}
    if learned:
        params["pos_embed"] = pos                                                # [1, 1+N, D]
    _check_tree(params, shapes, "")
    extra = sorted(k for k in state_dict if k not in used and not k.startswith(("head.", "fc_norm.")))
    if extra:
        raise UserError(f"the state dict has {len(extra)} names a {depth}-block ViT does not, "
                        f"e.g. {extra[0]!r}: another architecture")
    return {"params": params, "batch_stats": {}}


def infer_config(state_dict: StateDict, num_heads: int | None = None) -> dict:
    """Our ViT config for a timm-named state dict: the variant with its embed dim and depth.

    A state dict does not say its head count: with MoCo v3's fixed sin-cos pos_embed it is our
    variant's (MoCo v3: 12 for ViT-S); with a learned one (timm, DeiT, DINO) it is that family's
    (6 for ViT-S). `num_heads` overrides both."""
    if "cls_token" not in state_dict or "patch_embed.proj.weight" not in state_dict:
        raise UserError("not a timm ViT state dict: no cls_token / patch_embed.proj.weight")
    d = int(np.shape(state_dict["cls_token"])[-1])
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    p = int(np.shape(state_dict["patch_embed.proj.weight"])[-1])
    pos = np.asarray(state_dict.get("pos_embed", np.zeros((1, 1, d))), np.float32)
    learned = not _is_sincos(pos, d)
    for variant, (_, vd, vdepth, vheads, _) in VARIANTS.items():
        if (vd, vdepth) == (d, depth) and d % (num_heads or 1) == 0:
            cfg = {"name": "vit", "variant": variant, "patch_size": p,
                   "stop_grad_patch_embed": False, "dtype": "float32",
                   "num_heads": int(num_heads or (LEARNED_HEADS[variant] if learned else vheads))}
            if learned:
                cfg["pos_embed"] = "learned"
                cfg["pos_embed_grid"] = int(round(np.sqrt(pos.shape[1] - 1)))
            return cfg
    raise UserError(f"a ViT with embed dim {d}, {depth} blocks"
                    + (f", {num_heads} heads" if num_heads else "")
                    + " is none of our variants ("
                    + ", ".join(f"{k}: {v[1]} dim, {v[2]} blocks, {v[3]} heads"
                                for k, v in VARIANTS.items()) + ")")


def _is_sincos(pos, d) -> bool:
    try:
        _check_pos_embed(pos, d)
        return True
    except UserError:
        return False


def _check_pos_embed(pos, d):
    """The file's pos_embed [1, 1+N, D] must be the fixed 2D sin-cos one our ViT computes."""
    n = pos.shape[1] - 1
    g = int(round(np.sqrt(n)))
    if pos.ndim != 3 or g * g != n or pos.shape[-1] != d:
        raise UserError(f"pos_embed has shape {tuple(pos.shape)}; expected [1, 1 + g*g, {d}]")
    ref = vit_lib.build_2d_sincos_position_embedding(g, g, d)[None]
    if not np.allclose(pos, ref, atol=SINCOS_ATOL):
        raise UserError("pos_embed is a learned position embedding, not MoCo v3's fixed 2D "
                        "sin-cos one; build the ViT with pos_embed='learned' (infer_config does)")


def _check_tree(tree, shapes, path):
    if isinstance(shapes, dict):
        for k in shapes:
            _check_tree(tree[k], shapes[k], f"{path}/{k}")
    elif tuple(np.shape(tree)) != tuple(shapes.shape):
        raise UserError(f"{path.strip('/')}: the file has shape {tuple(np.shape(tree))}, the "
                        f"model expects {tuple(shapes.shape)}: another width")
