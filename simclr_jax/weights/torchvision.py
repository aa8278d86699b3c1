"""Our ResNet <-> torchvision.models.resnet names (`conv1`, `bn1`, `layerN.i.convK/bnK`,
`downsample.0/1`).

Layouts: a conv kernel is [kh, kw, in, out] here and [out, in, kh, kw] in torch; BN `scale`,
`bias`, `mean`, `var` are torch's `weight`, `bias`, `running_mean`, `running_var` (plus an int64
`num_batches_tracked` that torch keeps and nothing reads in inference).

Same function, not only the same names: our ResNet v1.5 puts the stride on the 3x3 conv of a
bottleneck (as torchvision), pads every conv by k // 2 (as torchvision), uses BN eps 1e-5 (as
torchvision) and, with `stem_pool_padding="torch"`, pads the stem max pool by 1 (as torchvision).
Where a preset differs on purpose, `torch_notes` says what reproduces our function in torch:
- `stem="cifar"` (3x3/1 conv, no max pool): not a torchvision stem;
- `stem_pool_padding="same"` (TF SAME max pool of the SimCLR/BYOL presets);
and `check_standard` refuses what torchvision cannot hold (SK-ResNets and their ResNet-D stem,
the extra stage-1 projection of basic-block nets with `shortcut="first_block_of_stage"`).
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.models import build_backbone, resnet

StateDict = Dict[str, np.ndarray]
TORCHVISION_DEPTHS = (18, 34, 50, 101, 152)
BN_TORCH = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
CIFAR_STEM_NOTE = ("CIFAR stem (3x3 conv, stride 1, no max pool) is not a torchvision stem: "
                   "before load_state_dict set model.conv1 = nn.Conv2d(3, {c}, 3, 1, 1, "
                   "bias=False) and model.maxpool = nn.Identity()")
SAME_POOL_NOTE = ("TF SAME stem max pool: torchvision's maxpool pads (1, 1); to compute this "
                  "model's function set model.maxpool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), "
                  "nn.MaxPool2d(3, 2)) (even feature maps, e.g. 224 px inputs)")
FC_NOTE = ("no classifier: set model.fc = nn.Identity() before load_state_dict(strict=True); "
           "the model then returns the pooled features")


def _cfg(model_cfg) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(model_cfg))


def variable_shapes(model_cfg) -> dict:
    """{"params": ..., "batch_stats": ...} of ShapeDtypeStructs (traced, nothing computed)."""
    module = build_backbone(_cfg(model_cfg))
    size = 32 if model_cfg.get("name") == "resnet" else 2 * int(model_cfg.get("patch_size", 16))
    return jax.eval_shape(lambda: module.init(jax.random.key(0, impl="rbg"),
                                              jnp.zeros((1, size, size, 3)), train=False))


def check_standard(model_cfg) -> None:
    """One UserError unless the ResNet has a torchvision counterpart (resnet18 ... 152, width 1)."""
    if model_cfg.get("name") != "resnet":
        raise UserError(f"--format torchvision holds ResNets; this encoder is a "
                        f"{model_cfg.get('name')!r} (use --format timm for a ViT)")
    check_convertible(model_cfg)
    depth, width = int(model_cfg["depth"]), float(model_cfg.get("width", 1.0))
    if depth not in TORCHVISION_DEPTHS or width != 1.0:
        raise UserError(f"ResNet-{depth} width {width:g} has no torchvision counterpart "
                        f"(torchvision has resnet{{{','.join(map(str, TORCHVISION_DEPTHS))}}} at "
                        f"width 1); export it in the default format")


def check_convertible(model_cfg) -> None:
    """One UserError for what torchvision's layout cannot hold at all."""
    if float(model_cfg.get("sk_ratio", 0.0)) > 0:
        raise UserError("SK-ResNets (sk_ratio > 0: Selective Kernel convs, ResNet-D stem and "
                        "shortcuts) have no torchvision counterpart; export them in the default "
                        "format")
    if (model_cfg.get("shortcut", "on_shape_change") == "first_block_of_stage"
            and not resnet.is_bottleneck(int(model_cfg["depth"]))):
        raise UserError("shortcut='first_block_of_stage' gives ResNet-{} a projection shortcut "
                        "in stage 1 that torchvision's layout has no place for (layer1.0 has no "
                        "downsample)".format(model_cfg["depth"]))


def torch_notes(model_cfg) -> List[str]:
    """What a torchvision user changes so the model computes our function (see module doc)."""
    notes = [FC_NOTE]
    if model_cfg.get("stem", "imagenet") == "cifar":
        notes.append(CIFAR_STEM_NOTE.format(c=resnet.scaled(64, float(model_cfg.get("width", 1)))))
    elif model_cfg.get("stem_pool_padding", "torch") == "same":
        notes.append(SAME_POOL_NOTE)
    return notes


def _torch_module(path: Tuple[str, ...]) -> str:
    """Our module path -> torchvision module name: ("stage2_block1", "shortcut", "conv") ->
    "layer2.0.downsample.0"."""
    head, rest = path[0], path[1:]
    if head in ("stem_conv", "stem_bn") and not rest:
        return {"stem_conv": "conv1", "stem_bn": "bn1"}[head]
    m = re.fullmatch(r"stage(\d)_block(\d+)", head)
    if m and rest in (("shortcut", "conv"), ("shortcut", "bn")):
        return f"layer{m[1]}.{int(m[2]) - 1}.downsample.{0 if rest[1] == 'conv' else 1}"
    if m and len(rest) == 1 and re.fullmatch(r"(conv|bn)[123]", rest[0]):
        return f"layer{m[1]}.{int(m[2]) - 1}.{rest[0]}"
    raise UserError(f"our ResNet layer {'/'.join(path)} has no torchvision counterpart")


def _modules(shapes: dict):
    """[(our module path, "conv" | "bn", {leaf: shape})] in the model's order."""
    out = []

    def walk(tree, path):
        if "kernel" in tree:
            out.append((path, "conv", {"kernel": tree["kernel"].shape}))
        elif "scale" in tree:
            out.append((path, "bn", {"scale": tree["scale"].shape}))
        else:
            for k, v in tree.items():
                walk(v, path + (k,))

    walk(shapes["params"], ())
    return out


def to_torch(model_cfg, variables) -> StateDict:
    """Our ResNet variables -> torchvision state dict (no `fc.*`), float32 numpy arrays."""
    check_convertible(model_cfg)
    params, stats = variables["params"], variables.get("batch_stats", {})
    sd: StateDict = {}
    for path, kind, _ in _modules(variable_shapes(model_cfg)):
        name = _torch_module(path)
        p = _get(params, path)
        if kind == "conv":
            sd[f"{name}.weight"] = np.transpose(np.asarray(p["kernel"], np.float32),
                                                (3, 2, 0, 1))                     # [O, I, kh, kw]
        else:
            s = _get(stats, path)
            for ours, theirs in BN_TORCH.items():
                src = p if ours in ("scale", "bias") else s
                sd[f"{name}.{theirs}"] = np.asarray(src[ours], np.float32)        # [C]
            sd[f"{name}.num_batches_tracked"] = np.zeros((), np.int64)
    return sd


def from_torch(model_cfg, state_dict: StateDict) -> dict:
    """torchvision state dict (prefix already removed; `fc.*` ignored) -> our variables.

    Every expected name must be there with its shape; an unexpected backbone name is an error
    too, so a checkpoint of another depth or width is refused, not half-loaded."""
    check_convertible(model_cfg)
    params: dict = {}
    stats: dict = {}
    used = set()
    for path, kind, leaf_shapes in _modules(variable_shapes(model_cfg)):
        name = _torch_module(path)
        if kind == "conv":
            w = _take(state_dict, f"{name}.weight", used)
            want = leaf_shapes["kernel"]
            k = np.transpose(w, (2, 3, 1, 0))                                     # [kh, kw, I, O]
            _check_shape(f"{name}.weight", k.shape, want, (3, 2, 0, 1))
            _set(params, path, {"kernel": k})
        else:
            c = leaf_shapes["scale"]
            arrays = {ours: _take(state_dict, f"{name}.{theirs}", used)
                      for ours, theirs in BN_TORCH.items()}
            for ours, a in arrays.items():
                _check_shape(f"{name}.{BN_TORCH[ours]}", a.shape, c)
            used.add(f"{name}.num_batches_tracked")
            _set(params, path, {"scale": arrays["scale"], "bias": arrays["bias"]})
            _set(stats, path, {"mean": arrays["mean"], "var": arrays["var"]})
    extra = sorted(k for k in state_dict if k not in used and not k.startswith("fc."))
    if extra:
        raise UserError(f"the state dict has {len(extra)} names a ResNet-{model_cfg['depth']} "
                        f"does not, e.g. {extra[0]!r}: another architecture")
    return {"params": params, "batch_stats": stats}


def infer_config(state_dict: StateDict) -> dict:
    """Our model config for a torchvision-named ResNet state dict (depth, width, stem, shortcut).

    A stem conv of 3x3 is our CIFAR stem (MoCo's CIFAR demo replaces conv1 so); the stem pool is
    torchvision's (`stem_pool_padding="torch"`)."""
    if "conv1.weight" not in state_dict or "layer1.0.conv1.weight" not in state_dict:
        raise UserError("not a torchvision ResNet state dict: no conv1.weight / "
                        "layer1.0.conv1.weight")
    c0, cin, kh, _ = np.shape(state_dict["conv1.weight"])
    blocks = tuple(len({k.split(".")[1] for k in state_dict if k.startswith(f"layer{s}.")})
                   for s in (1, 2, 3, 4))
    bottleneck = "layer1.0.conv3.weight" in state_dict
    depth = next((d for d, sizes in resnet.STAGE_SIZES.items()
                  if sizes == blocks and resnet.is_bottleneck(d) == bottleneck), None)
    if depth is None:
        raise UserError(f"a ResNet with {blocks} {'bottleneck' if bottleneck else 'basic'} "
                        f"blocks per stage is none of depths {sorted(resnet.STAGE_SIZES)}")
    width = c0 / 64.0
    if cin != 3 or kh not in (3, 7) or resnet.scaled(64, width) != c0:
        raise UserError(f"conv1.weight has shape {tuple(np.shape(state_dict['conv1.weight']))}; "
                        f"expected [64 x width, 3, 7, 7] (or 3x3 for a CIFAR stem)")
    project_stage1 = not bottleneck and "layer1.0.downsample.0.weight" in state_dict
    return {"name": "resnet", "depth": depth, "width": width,
            "stem": "cifar" if kh == 3 else "imagenet", "sk_ratio": 0.0,
            "shortcut": "first_block_of_stage" if project_stage1 else "on_shape_change",
            "stem_pool_padding": "torch", "conv_init": "torchvision",
            "zero_init_residual": False, "bn_group_size": None, "dtype": "float32"}


# ----------------------------------------------------------------------------- helpers

def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, leaves):
    for k in path:
        tree = tree.setdefault(k, {})
    tree.update(leaves)


def _take(sd: StateDict, name: str, used: set) -> np.ndarray:
    if name not in sd:
        raise UserError(f"the state dict has no {name!r}: not this architecture (or another "
                        f"depth / stem)")
    used.add(name)
    return np.asarray(sd[name], np.float32)


def _check_shape(name, have, want, perm=None):
    if tuple(have) != tuple(want):
        show = lambda s: tuple(np.asarray(s)[list(perm)]) if perm else tuple(s)  # noqa: E731
        raise UserError(f"{name} has shape {show(have)}, the model expects {show(want)}: "
                        f"another depth or width")
