"""The backbone a pretraining run starts from: `--config.init_from=FILE_OR_WORKDIR`.

A weights file (every format `simclr_jax.weights.released` reads: our exports, torchvision /
timm state dicts, the released MoCo, SimSiam, SwAV, DINO, BYOL and SimCLR checkpoints) or a
pretraining workdir (its method's encoder). Only the online backbone is taken; heads,
predictors and the optimizer start fresh, and the method's state is made from the loaded
backbone (an EMA target starts equal to it, as it does at a random init). Resuming a run
restores its checkpoint instead: the file is read only when the run starts.

The file's network must compute the same function as `config.model`: every architecture field
of the two backbones must agree (depth, width, stem, SK, stem pool and conv padding, ViT
variant, ...), so a mismatch is one line naming the `--config.model.*` values that reproduce the
file's network, not a silent re-interpretation of its weights.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.models import build_backbone

# Backbone fields that change neither the parameters' shapes nor the function at inference.
NOT_ARCHITECTURE = ("parent", "name", "dtype", "bn_group_size", "bn_momentum", "conv_init",
                    "zero_init_residual", "stop_grad_patch_embed", "pos_embed_grid")
CONFIG_KEY = {"width_multiplier": "width"}      # a module field -> its config.model key


def _architecture(model_cfg) -> dict:
    module = build_backbone(ml_collections.ConfigDict(dict(model_cfg)))
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
              if f.name not in NOT_ARCHITECTURE}
    if fields.get("stem") == "cifar":       # no max pool: its padding changes nothing
        fields.pop("stem_pool_padding", None)
    return {"backbone": type(module).__name__, **fields}


def check_same_network(loaded_model: dict, model, source: str) -> None:
    """One UserError unless `loaded_model` and `model` (configs) build the same network."""
    theirs, ours = _architecture(loaded_model), _architecture(model)
    if theirs["backbone"] != ours["backbone"]:
        raise UserError(f"--config.init_from {source} holds a {theirs['backbone']}; this config "
                        f"trains a {ours['backbone']} (set --config.model.name)")
    diff = {k: v for k, v in theirs.items() if ours.get(k) != v}
    if diff:
        fix = " ".join(f"--config.model.{CONFIG_KEY.get(k, k)}={v}" for k, v in diff.items())
        now = ", ".join(f"{CONFIG_KEY.get(k, k)}={ours.get(k)!r}" for k in diff)
        raise UserError(f"--config.init_from {source} holds another network than "
                        f"config.model ({now}); to train the file's network pass {fix}")


def load_initial_backbone(config) -> Optional[dict]:
    """{"params": ..., "batch_stats": ...} of the backbone config.init_from names, as numpy
    arrays, or None when the config starts from a random init."""
    source = config.get("init_from")
    if not source:
        return None
    from simclr_jax.evaluate.classifier import load_pretraining
    pre, arrays = load_pretraining(source, config.get("init_step"), config.get("init_encoder"))
    check_same_network(pre.model.to_dict(), config.model, source)
    params = arrays.get("params", {}).get("backbone")
    if params is None:
        raise UserError(f"--config.init_from {source} holds no backbone parameters")
    return jax.device_get({"params": params,
                           "batch_stats": arrays.get("batch_stats", {}).get("backbone", {})})


def graft_backbone(variables: dict, backbone: dict) -> dict:
    """`variables` (a freshly initialised network's) with its "backbone" replaced by
    `backbone`; the structures and shapes must match (checked by `check_same_network` first,
    asserted here)."""
    out = dict(variables)
    for collection in ("params", "batch_stats"):
        fresh = variables.get(collection, {}).get("backbone")
        if fresh is None:
            continue
        new = backbone.get(collection, {})
        shapes = jax.tree.map(np.shape, fresh)
        if jax.tree.map(np.shape, new) != shapes:
            raise UserError(f"the init_from backbone's {collection} do not have this network's "
                            f"structure and shapes")
        out[collection] = {**variables[collection],
                           "backbone": jax.tree.map(lambda a, f: jnp.asarray(a, f.dtype), new,
                                                    fresh)}
    return out
