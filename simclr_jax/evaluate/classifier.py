"""Classifiers built on a pretrained encoder: backbone -> (kept projector layers) -> linear head.

One module serves every supervised protocol, so a linear-eval model, a fine-tuned model (SimCLRv2
keeps the first `ft_proj_selector` projector layers) and a distilled student are all the same
kind of object, saved the same way and loadable as a distillation teacher.

Variables keep the pretraining names ("backbone", "projector" with its "dense{i}"/"bn{i}" layers),
so pretrained weights are grafted by path; the head is "probe" so optim.weight_decay_mask leaves it
out of weight decay and LARS' trust ratio, like SimCLR's `head_supervised`.
"""
from __future__ import annotations

import json
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simclr_jax import checkpoint
from simclr_jax.errors import UserError
from simclr_jax.models import build_backbone
from simclr_jax.models.heads import SIMCLR_INIT, LinearHead, MLPHead
from simclr_jax.workdir import as_path

CLASSIFIER_JSON = "classifier.json"
HEAD = "probe"


def linear_head(num_classes: int, zero_init: bool, name: Optional[str] = None) -> LinearHead:
    """Dense with bias; zero kernel (SimCLR's zero_init_logits_layer) or N(0, 0.01) (MoCo)."""
    init = nn.initializers.zeros if zero_init else SIMCLR_INIT
    return LinearHead(num_classes, kernel_init=init, name=name)


class Classifier(nn.Module):
    backbone: nn.Module
    projector: Optional[nn.Module] = None  # projector layers [0, k) as an MLPHead, or None
    projector_relu: bool = False           # the kept layers end on a hidden layer: ReLU after it
    num_classes: int = 1
    zero_init: bool = False

    def features(self, x, train: bool):
        h = self.backbone(x, train=train)                                # [B, F]
        if self.projector is not None:
            h = self.projector(h, train=train)                           # [B, D_k]
            if self.projector_relu:
                h = nn.relu(h)
        return h

    @nn.compact
    def __call__(self, x, train: bool, freeze_features: bool = False):
        h = self.features(x, train)
        if freeze_features:
            h = jax.lax.stop_gradient(h)
        return linear_head(self.num_classes, self.zero_init, name=HEAD)(h)  # [B, C]


def projector_prefix(projector: MLPHead, k: int):
    """(module computing layers [0, k) of `projector`, whether a ReLU follows), None for k = 0.

    SimCLRv2's `ft_proj_selector`: the classifier sits on layer k's output (after its ReLU for a
    hidden layer). The prefix is the same MLPHead cut after layer k - 1 (its last layer configured
    like a hidden one), so its parameter names equal the pretrained projector's.
    """
    hidden = tuple(projector.hidden_dims)
    if not 0 <= k <= len(hidden) + 1:
        raise UserError(f"ft_proj_selector={k} but the pretrained projector has "
                         f"{len(hidden) + 1} layers; use 0 (classifier on backbone features) .. "
                         f"{len(hidden) + 1}.")
    if k == 0:
        return None, False
    if k == len(hidden) + 1:
        return projector, False
    return projector.clone(hidden_dims=hidden[:k - 1], out_dim=hidden[k - 1],
                           last_use_bias=projector.use_bias, last_bn=projector.use_bn,
                           last_bn_affine=True, last_bn_bias=True), True


# ----------------------------------------------------------------------------- description

def describe(model_cfg, *, num_classes: int, image_size: int, normalize: str,
             ft_proj_selector: int = 0, head_cfg=None, predictor_cfg=None, zero_init=False,
             pretraining=None, extra: Optional[dict] = None) -> dict:
    """The JSON-able description `build` rebuilds a Classifier from (written to classifier.json).

    pretraining: the pretraining config whose method's encoder (methods.EncoderSpec) is the
    backbone; None for a plain `model_cfg` backbone (a distillation student)."""
    as_dict = lambda c: None if c is None else (c.to_dict() if hasattr(c, "to_dict") else dict(c))
    meta = {"model": as_dict(model_cfg), "head": as_dict(head_cfg),
            "predictor": as_dict(predictor_cfg), "ft_proj_selector": int(ft_proj_selector),
            "num_classes": int(num_classes), "zero_init": bool(zero_init),
            "image_size": int(image_size), "normalize": str(normalize),
            "pretraining": as_dict(pretraining)}
    meta.update(extra or {})
    return meta


def _encoder_and_projector(meta: dict, with_projector: bool):
    """(backbone module, full pretrained projector or None) as pretraining built them."""
    from simclr_jax.methods.legacy import migrate_config
    pre = meta.get("pretraining")
    if pre:   # the method's encoder, with the classifier's model settings (e.g. global BN)
        from simclr_jax.methods import method_of
        pre = ml_collections.ConfigDict({**migrate_config(pre), "model": meta["model"]})
        method = method_of(pre)
        projector = method.build_network(pre, 0).projector if with_projector else None
        return method.encoder(pre).backbone, projector
    backbone = build_backbone(ml_collections.ConfigDict(meta["model"]))
    if not with_projector:
        return backbone, None
    from simclr_jax.models import heads   # a classifier.json written before `pretraining`
    old = migrate_config({"head": meta["head"]})
    projector, _ = heads.build_heads(ml_collections.ConfigDict(old["head"]),
                                     ml_collections.ConfigDict(meta.get("predictor") or {}),
                                     backbone.num_features, meta["model"].get("bn_group_size"))
    return backbone, projector


def build(meta: dict) -> Classifier:
    """Classifier module from a `describe` dict."""
    k = int(meta.get("ft_proj_selector", 0))
    backbone, full = _encoder_and_projector(meta, with_projector=k > 0)
    projector, relu = projector_prefix(full, k) if k > 0 else (None, False)
    return Classifier(backbone=backbone, projector=projector, projector_relu=relu,
                      num_classes=int(meta["num_classes"]), zero_init=bool(meta["zero_init"]))


def write_description(workdir: str, meta: dict) -> None:
    if jax.process_index() == 0:
        as_path(workdir).mkdir(parents=True, exist_ok=True)
        (as_path(workdir) / CLASSIFIER_JSON).write_text(json.dumps(meta, indent=2,
                                                                   sort_keys=True))


# ----------------------------------------------------------------------------- weights

def _take_like(template, source, path: str):
    """`source` restricted to `template`'s tree; shapes must match (pretrained -> new model)."""
    if isinstance(template, dict):
        if not isinstance(source, dict):
            raise UserError(f"checkpoint has an array at {path!r} where the model has a subtree.")
        missing = [k for k in template if k not in source]
        if missing:
            raise UserError(f"the checkpoint has no {path}/{missing[0]} (have: "
                             f"{sorted(source)}): it was not written by this architecture.")
        return {k: _take_like(template[k], source[k], f"{path}/{k}") for k in template}
    if tuple(template.shape) != tuple(np.shape(source)):
        raise UserError(f"shape mismatch at {path}: model {tuple(template.shape)} vs checkpoint "
                         f"{tuple(np.shape(source))}.")
    return source


def graft(template: dict, pretrained: dict, collection: str) -> dict:
    """Every top-level subtree of `template` (shapes only is fine) filled from `pretrained`."""
    return {k: _take_like(v, pretrained.get(k, {}), f"{collection}/{k}")
            for k, v in template.items()}


def init_variables(module: Classifier, pretrained: dict, rng, image_size: int) -> dict:
    """{"params", "batch_stats"}: everything but the head from `pretrained` (bit-exact), the head
    freshly initialised. Only shapes are traced, so no network-sized program is compiled."""
    dummy = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
    shapes = jax.eval_shape(lambda: module.init(rng, dummy, train=False))
    params = dict(shapes["params"])
    head_shape = params.pop(HEAD)
    variables = {"params": graft(params, pretrained.get("params", {}), "params"),
                 "batch_stats": graft(dict(shapes.get("batch_stats", {})),
                                      pretrained.get("batch_stats", {}), "batch_stats")}
    feat_dim = head_shape["dense"]["kernel"].shape[0]
    head = linear_head(module.num_classes, module.zero_init).init(
        rng, jnp.zeros((1, feat_dim), jnp.float32))["params"]
    variables["params"][HEAD] = head
    return variables


def merge(frozen: dict, params: dict, batch_stats: dict) -> dict:
    """Frozen part + trainable part of one classifier -> its apply() variables."""
    return {"params": {**frozen.get("params", {}), **params},
            "batch_stats": {**frozen.get("batch_stats", {}), **batch_stats}}


# ----------------------------------------------------------------------------- loading

def _read_json(workdir: str, name: str, what: str) -> dict:
    path = as_path(workdir) / name
    if not path.exists():
        raise UserError(f"{workdir!r} has no {name}: {what}")
    return json.loads(path.read_text())


def load_pretraining(workdir: str, step: Optional[int] = None, encoder: Optional[str] = None):
    """(pretraining config as a ConfigDict, checkpoint arrays) of a pretraining workdir, or of a
    weights file (simclr_jax.weights.released: its backbone in the default pretraining config;
    `encoder` picks another encoder in the file, e.g. "student", "ema_model/")."""
    if not workdir:
        raise UserError("set --config.init_from=<pretraining workdir> (the --workdir of a "
                         "pretraining run).")
    from simclr_jax.weights import released
    if released.is_weights_path(workdir):   # a released checkpoint / exported weights file
        return released.as_pretraining(workdir, encoder=encoder)
    if encoder:
        raise UserError(f"--config.init_encoder={encoder!r} picks an encoder inside a weights "
                        f"file; {workdir!r} is a workdir (its method's encoder is used)")
    from simclr_jax.methods.legacy import migrate_config
    config = ml_collections.ConfigDict(migrate_config(_read_json(
        workdir, "config.json", "pass the --workdir of a pretraining run as --config.init_from.")))
    if config.get("mode", "pretrain") != "pretrain":
        raise UserError(f"{workdir!r} holds a {config.mode!r} run, not a pretraining run; "
                         f"--config.init_from needs a pretraining workdir.")
    return config, encoder_arrays(config, checkpoint.restore_arrays(workdir, step))


def encoder_arrays(config, arrays: dict) -> dict:
    """A pretraining checkpoint's arrays as its method's encoder sees them: params and
    batch_stats in the online network's naming (methods.EncoderSpec.variables), plus the step."""
    from simclr_jax.methods import method_of
    variables = method_of(config).encoder(config).variables(arrays)
    return {**variables, "step": arrays["step"]}


def load(workdir: str, step: Optional[int] = None):
    """(Classifier, variables, description) of a linear-eval / fine-tune / distill workdir."""
    meta = _read_json(workdir, CLASSIFIER_JSON,
                      "pass the --workdir of a linear_eval, finetune or distill run.")
    arrays = checkpoint.restore_arrays(workdir, step)
    frozen = arrays.get("frozen", {}).get("model", {})
    variables = merge(frozen, arrays["params"], arrays.get("batch_stats", {}))
    return build(meta), variables, meta

