"""The released checkpoints of the reference codebases -> our backbone, with format detection.

`import_file(path)` -> `Imported(model_config, image_size, normalize, params, batch_stats,
format, source)`. The file's container is detected from its content (a zip or pickle that
torch.load reads, a .safetensors, a plain pickle, a TensorFlow checkpoint or SavedModel), then
the layout from its keys:

| layout (what was read)             | where it is written (the reference's code)                     |
|------------------------------------|----------------------------------------------------------------|
| {"state_dict": module.encoder_q.*} | facebookresearch/moco main_moco.py (8976944^), v1 and v2: the  |
|                                    | query encoder, as its main_lincls.py loads it; fc.* dropped    |
| {"state_dict": module.base_encoder.* / module.momentum_encoder.*}                                   |
|                                    | facebookresearch/moco-v3 main_moco.py; ResNet (torchvision    |
|                                    | names) or ViT (timm names, vits.py); main_lincls.py loads the |
|                                    | base encoder; fc.* / head.* (the MLPs) dropped                |
| {"state_dict": module.encoder.*}   | facebookresearch/simsiam main_simsiam.py; encoder.fc dropped   |
| {"state_dict": module.*} or module.* | facebookresearch/swav main_swav.py and the released        |
|                                    | swav_*_pretrain.pth.tar (src/resnet50.py: torchvision names,   |
|                                    | its extra ConstantPad2d(1) + conv1 padding 2 = padding 3);     |
|                                    | projection_head.* / prototypes.* dropped                       |
| {"teacher"/"student": [module.]backbone.*}                                                          |
|                                    | facebookresearch/dino main_dino.py full checkpoints; the       |
|                                    | teacher by default (eval_linear.py's --checkpoint_key)         |
| plain torchvision / timm names     | torchvision, timm, DINO's *_pretrain.pth backbones, our export |
| {"model": ...}                     | detectron2-style pickles of torchvision names (DeiT, ...)      |
| {"experiment_state": (online_params, ...)} | deepmind-research byol/utils/checkpointing.py (dill     |
|                                    | pickle of Haiku params): `haiku.py` has the names              |
| TF1 / TF2 checkpoint, TF2 SavedModel | google-research/simclr (v1 and v2): `tf_checkpoint.py` has |
| directory (`base_model/`, `ema_model/base_model/`, `model/resnet_model/`) | the layouts; read   |
|                                    | with TensorFlow                                                |

Our export writes float32; the files' float16/bfloat16 arrays are read as float32. A file that
is none of these, or a backbone our models cannot hold, is one UserError naming what was found.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.weights import files, haiku, tf_checkpoint, timm as timm_w, torchvision as tv
from simclr_jax.workdir import as_path

# (prefix, what writes it). Tried in this order; the first whose stem is in the file wins.
PREFIXES: Tuple[Tuple[str, str], ...] = (
    ("module.encoder_q.", "MoCo v1/v2 query encoder"),
    ("module.base_encoder.", "MoCo v3 base encoder"),
    ("module.momentum_encoder.", "MoCo v3 momentum encoder"),
    ("module.encoder.", "SimSiam encoder"),
    ("module.backbone.", "DINO backbone (DDP)"),
    ("backbone.", "DINO backbone"),
    ("module.", "SwAV / DataParallel model"),
    ("", "plain state dict"),
)
# container keys holding a state dict, in the order tried (DINO: the teacher, as its eval does)
CONTAINERS = ("state_dict", "teacher", "student", "model", "online_params")
RESNET_STEM = "conv1.weight"
VIT_STEM = "cls_token"
IMAGENET = ("imagenet", 224)


@dataclasses.dataclass
class Imported:
    model_config: dict
    image_size: int
    normalize: str
    params: dict
    batch_stats: dict
    format: str          # "torchvision_resnet" | "timm_vit" | "haiku_pickle" | "tf_resnet"
    source: str          # which layout was found, e.g. "state_dict/module.encoder_q."


def read(path: str) -> Any:
    """The file's object: .safetensors by suffix, else torch.load for zip / torch pickles,
    else a plain pickle."""
    p = as_path(path)
    if not p.exists():
        raise UserError(f"{path} does not exist")
    if p.is_dir():
        raise UserError(f"{path} is a directory, not a weights file")
    if str(path).endswith(".safetensors"):
        return files.load_safetensors(path)
    with p.open("rb") as f:
        head = f.read(8)
    if len(head) < 2:
        raise UserError(f"{path} is empty or truncated ({len(head)} bytes)")
    if head[:2] == b"PK" or str(path).endswith((".pth", ".pth.tar", ".pt", ".tar")):
        return files.load_pth(path)
    if head[:1] == b"\x80":        # a pickle (protocol 2+): Haiku / detectron2 pickles
        return haiku.load(path)
    raise UserError(f"{path} is not a weights file: neither a PyTorch checkpoint (zip or "
                    f"pickle), a .safetensors nor a pickle (starts with {head[:4]!r})")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def find_state_dict(obj, container: Optional[str] = None) -> Tuple[Dict[str, np.ndarray], str]:
    """(flat state dict, the container key it sat under or "")."""
    if _is_state_dict(obj) and container is None:
        return obj, ""
    if isinstance(obj, dict):
        keys = [container] if container else list(CONTAINERS)
        for k in keys:
            if k in obj and _is_state_dict(obj[k]):
                return obj[k], k
        if container:
            raise UserError(f"the file has no state dict under {container!r} (top-level keys: "
                            f"{_show(obj)})")
    raise UserError(f"no state dict found: expected {{name: array}} at the top or under one of "
                    f"{list(CONTAINERS)}; found {_describe(obj)}")


def find_backbone(sd: Dict[str, np.ndarray], prefix: Optional[str] = None):
    """(backbone names without the prefix, prefix, what writes it, "torchvision_resnet" |
    "timm_vit"). The heads under the prefix (fc, head, projection_head, ...) are dropped."""
    table = [(p, w) for p, w in PREFIXES if prefix is None or p == prefix]
    if prefix is not None and not table:
        table = [(prefix, "the given prefix")]
    for p, who in table:
        for stem, fmt in ((RESNET_STEM, "torchvision_resnet"), (VIT_STEM, "timm_vit")):
            if p + stem in sd:
                keep = (("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
                        if fmt == "torchvision_resnet" else
                        ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm."))
                out = {k[len(p):]: v for k, v in sd.items()
                       if k.startswith(p) and k[len(p):].startswith(keep)}
                return out, p, who, fmt
    example = ", ".join(sorted(sd)[:4])
    raise UserError(f"no ResNet (conv1.weight) or ViT (cls_token) backbone under any known "
                    f"prefix ({', '.join(repr(p) for p, _ in PREFIXES if p)} or none); the "
                    f"state dict has {len(sd)} names, e.g. {example}")


def import_state_dict(sd: Dict[str, np.ndarray], prefix: Optional[str] = None,
                      num_heads: Optional[int] = None) -> Imported:
    backbone, p, who, fmt = find_backbone(sd, prefix)
    if fmt == "torchvision_resnet":
        cfg = tv.infer_config(backbone)
        variables = tv.from_torch(cfg, backbone)
        size = 32 if cfg["stem"] == "cifar" else IMAGENET[1]
    else:
        cfg = timm_w.infer_config(backbone, num_heads)
        variables = timm_w.from_torch(cfg, backbone)
        grid = int(round(np.sqrt(backbone["pos_embed"].shape[1] - 1)))
        size = grid * cfg["patch_size"]
    return Imported(cfg, size, IMAGENET[0], variables["params"], variables["batch_stats"],
                    fmt, f"{p or '(no prefix)'} ({who})")


def is_weights_path(path: str) -> bool:
    """A weights file (or a TF checkpoint prefix / SavedModel directory), not a workdir or an
    export directory."""
    return as_path(path).is_file() or tf_checkpoint.checkpoint_prefix(path) is not None


def split_encoder(obj, encoder: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """`--encoder NAME` -> (container, prefix): NAME is a top-level key of the file ("teacher",
    "student", "state_dict"), a prefix ("module.momentum_encoder."), or both joined by "/"
    ("student/module.backbone.")."""
    if not encoder:
        return None, None
    top = obj if isinstance(obj, dict) else {}
    if encoder in top:
        return encoder, None
    head, _, rest = encoder.partition("/")
    if rest and head in top:
        return head, rest
    return None, encoder


def import_file(path: str, container: Optional[str] = None, prefix: Optional[str] = None,
                num_heads: Optional[int] = None, encoder: Optional[str] = None) -> Imported:
    """Our backbone from a released checkpoint (see the module docstring for the layouts).

    `encoder` picks another encoder than the default one (`split_encoder`; for SimCLR's TF1
    checkpoints "ema_model/"), as do `container` ("state_dict", "teacher", "student", ...) and
    `prefix` ("module.momentum_encoder." ...); `num_heads` states a ViT's head count (a state
    dict does not say it; default: our variant's, MoCo v3's 12)."""
    tf_prefix = tf_checkpoint.checkpoint_prefix(path)
    if tf_prefix is not None:           # SimCLR's TF1 / TF2 checkpoints and SavedModels
        try:
            cfg, variables, size, norm, source = tf_checkpoint.import_checkpoint(
                tf_prefix, encoder)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        return Imported(cfg, size, norm, variables["params"], variables["batch_stats"],
                        "tf_resnet", source)
    obj = read(path)
    if encoder:
        container, prefix = split_encoder(obj, encoder)
    found = haiku.find_params(obj) if container is None and prefix is None else None
    if found is not None:                   # BYOL's Haiku checkpoint
        try:
            cfg, variables = haiku.from_haiku(*found)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        return Imported(cfg, IMAGENET[1], IMAGENET[0], variables["params"],
                        variables["batch_stats"], "haiku_pickle",
                        "experiment_state.online_params (BYOL Haiku ResNet)")
    sd, where = find_state_dict(obj, container)
    try:
        imported = import_state_dict(sd, prefix, num_heads)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    if where:
        imported.source = f"{where}/{imported.source}"
    return imported


def _show(d: dict) -> str:
    keys = [str(k) for k in list(d)[:6]]
    return "[" + ", ".join(keys) + (", ...]" if len(d) > 6 else "]")


def _describe(obj) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {_show(obj)}"
    return f"a {type(obj).__name__}"


def as_pretraining(path: str, imported: Optional[Imported] = None,
                   encoder: Optional[str] = None):
    """(pretraining config, checkpoint arrays) as `evaluate.classifier.load_pretraining` returns
    them for a workdir, for a weights file: the default pretraining config with the file's
    backbone, ImageNet as its dataset (override --config.dataset.*) and its normalisation."""
    import ml_collections

    from simclr_jax.config_base import base_config
    w = imported or import_file(path, encoder=encoder)
    c = base_config()
    model = c.model.to_dict()
    model.update(w.model_config)
    c.model = ml_collections.ConfigDict(model)
    c.dataset.name, c.dataset.image_size = "imagenet2012", int(w.image_size)
    c.dataset.train_split, c.dataset.knn_train_split = "train", "train"
    c.dataset.knn_test_split = "validation"
    for view in (c.aug.view1, c.aug.view2):
        view.normalize = w.normalize
    c.eval.knn_features = "backbone"
    arrays = {"params": {"backbone": w.params}, "batch_stats": {"backbone": w.batch_stats},
              "step": np.zeros((), np.int32)}
    return c, arrays
