"""BYOL's checkpoints (deepmind-research/byol) -> our ResNet.

Layout, from deepmind-research byol/utils/checkpointing.py: `dill.dump(dict(experiment_state=
jax.tree_map(lambda x: jax.device_get(x[0]), state), step=..., rng=...))` where the state is
byol_experiment._ByolExperimentState(online_params, target_params, online_state, target_state,
opt_state), the fields in that order; eval_experiment.py evaluates `online_params` (and
online_state's BN averages). Haiku names, from byol/utils/networks.py (ResNetTorso, built with
name=None so the module is "res_net50" ...) and haiku/_src/nets/resnet.py (BlockV1) and
batch_norm.py:

    res_net50/~/initial_conv                       {"w": [7, 7, 3, 64]}          SAME, stride 2
    res_net50/~/initial_batchnorm                  {"scale", "offset": [1, 1, 1, C]}
    res_net50/~/initial_batchnorm/~/mean_ema       state {"counter", "hidden", "average"}
    res_net50/~/block_group_G/~/block_B/~/conv_I   {"w"}   (I = 0, 1[, 2]); stride on conv_1
    .../batchnorm_I, .../shortcut_conv, .../shortcut_batchnorm (use_projection: every group's
    first block)

Every conv and the stem max pool are TF SAME, so the function is our ResNet with
conv_padding="same", stem_pool_padding="same", shortcut="first_block_of_stage"; inputs are
normalised with ImageNet's mean/std (byol/utils/dataset.py normalize_images).

Unpickling the file needs the classes it names (the namedtuple, Haiku's FlatMapping, BYOL's
optimizer state); `load` stands in a plain container for any class outside numpy and the
standard containers, so neither byol nor haiku needs to be installed. Pickles run code: only
load files you trust (`load` reaches no callable but containers and array reconstruction).
"""
from __future__ import annotations

import pickle
import re
from typing import Any, Dict, Optional

import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.models import resnet
from simclr_jax.weights import torchvision as tv
from simclr_jax.workdir import as_path

# The only callables a pickle may reach: containers and array reconstruction. Everything else
# (the namedtuples, Haiku's FlatMapping, BYOL's optimizer state, and anything malicious) is a Stub.
SAFE = {"builtins": {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex",
                     "bool", "str", "bytes", "bytearray", "object", "slice"},
        "collections": {"OrderedDict", "defaultdict"}, "copyreg": {"_reconstructor"},
        "_codecs": {"encode"},
        "numpy": {"dtype", "ndarray"}, "numpy.core.multiarray": {"_reconstruct", "scalar"},
        "numpy._core.multiarray": {"_reconstruct", "scalar"},
        "numpy.core.numeric": {"_frombuffer"}, "numpy._core.numeric": {"_frombuffer"},
        "numpy.dtypes": None, "jax._src.array": {"_reconstruct_array"}}
EXPERIMENT_FIELDS = ("online_params", "target_params", "online_state", "target_state",
                     "opt_state")


class Stub:
    """Stand-in for a class the pickle names but we do not import: keeps its arguments
    (a namedtuple's fields), its state (an object's __dict__) and its items (a mapping's)."""

    args: tuple = ()
    state: Any = None

    def __new__(cls, *args, **kwargs):      # NEWOBJ (namedtuples) calls only __new__
        obj = object.__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.__dict__.setdefault("entries", {})[key] = value


def _stub_class(module: str, name: str):
    return type(name, (Stub,), {"__module__": module})


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module in SAFE and (SAFE[module] is None or name in SAFE[module]):
            return super().find_class(module, name)
        return _stub_class(module, name)


def load(path: str) -> Any:
    try:
        with as_path(path).open("rb") as f:
            return _plain(_Unpickler(f).load())
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path} cannot be unpickled (truncated, or not a pickle): "
                        f"{type(e).__name__}: {str(e)[:120]}") from None


def _plain(obj):
    """Stubs -> dicts (mappings: their items; namedtuples: their fields by position)."""
    if isinstance(obj, Stub):
        if obj.__dict__.get("entries"):
            return _plain(dict(obj.entries))
        if isinstance(obj.state, dict) and obj.state:
            inner = obj.state.get("_data", obj.state.get("_mapping", obj.state))
            return _plain(dict(inner))
        if len(obj.args) == 1 and isinstance(obj.args[0], (dict, list)):
            return _plain(dict(obj.args[0]))
        return tuple(_plain(a) for a in obj.args)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_plain(v) for v in obj)
    if hasattr(obj, "_fields"):            # a namedtuple we could import
        return {f: _plain(getattr(obj, f)) for f in obj._fields}
    return obj


def find_params(obj) -> Optional[tuple]:
    """(params, state) of a BYOL checkpoint object, a {"online_params", "online_state"} dict or
    bare Haiku params ({module path: {name: array}}), else None."""
    if isinstance(obj, dict) and "experiment_state" in obj:
        obj = obj["experiment_state"]
        if isinstance(obj, tuple):
            obj = dict(zip(EXPERIMENT_FIELDS, obj))
    if isinstance(obj, dict) and "online_params" in obj:
        return obj["online_params"], obj.get("online_state", {})
    if is_haiku_params(obj):
        return obj, {}
    return None


def is_haiku_params(obj) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and any(isinstance(k, str) and k.endswith("/~/initial_conv") for k in obj))


def infer_config(params: Dict[str, dict]) -> tuple:
    """(our model config, the top module name) of a Haiku ResNetTorso's params."""
    top = next(k for k in params if k.endswith("/~/initial_conv"))[:-len("/~/initial_conv")]
    blocks = tuple(len({m.group(1) for k in params
                        for m in [re.match(rf"{re.escape(top)}/~/block_group_{g}/~/block_(\d+)/", k)]
                        if m}) for g in range(4))
    bottleneck = any(k.endswith("/~/conv_2") for k in params)
    depth = next((d for d, sizes in resnet.STAGE_SIZES.items()
                  if sizes == blocks and resnet.is_bottleneck(d) == bottleneck), None)
    if depth is None:
        raise UserError(f"a Haiku ResNet with {blocks} blocks per group is none of depths "
                        f"{sorted(resnet.STAGE_SIZES)}")
    c0 = np.shape(params[f"{top}/~/initial_conv"]["w"])[-1]
    return ({"name": "resnet", "depth": depth, "width": c0 / 64.0, "stem": "imagenet",
             "sk_ratio": 0.0, "shortcut": "first_block_of_stage", "stem_pool_padding": "same",
             "conv_padding": "same", "conv_init": "fan_in_truncated_normal",
             "zero_init_residual": True,
             "bn_group_size": None, "dtype": "float32"}, top)


def _haiku_module(top: str, path) -> str:
    head, rest = path[0], path[1:]
    if head == "stem_conv":
        return f"{top}/~/initial_conv"
    if head == "stem_bn":
        return f"{top}/~/initial_batchnorm"
    m = re.fullmatch(r"stage(\d)_block(\d+)", head)
    base = f"{top}/~/block_group_{int(m[1]) - 1}/~/block_{int(m[2]) - 1}/~/"
    if rest[0] == "shortcut":
        return base + ("shortcut_conv" if rest[1] == "conv" else "shortcut_batchnorm")
    kind, i = rest[0][:-1], int(rest[0][-1]) - 1
    return base + (f"conv_{i}" if kind == "conv" else f"batchnorm_{i}")


def from_haiku(params: dict, state: dict) -> tuple:
    """(model config, our variables) from Haiku params and state (BN averages)."""
    cfg, top = infer_config(params)
    out_p: dict = {}
    out_s: dict = {}
    used = set()
    for path, kind, leaf in tv._modules(tv.variable_shapes(cfg)):
        name = _haiku_module(top, path)
        if name not in params:
            raise UserError(f"the Haiku params have no {name!r}: not this architecture")
        used.add(name)
        if kind == "conv":
            w = np.asarray(params[name]["w"], np.float32)                       # [kh, kw, I, O]
            tv._check_shape(name, w.shape, leaf["kernel"])
            tv._set(out_p, path, {"kernel": w})
        else:
            c = leaf["scale"][0]
            flat = lambda a: np.asarray(a, np.float32).reshape(-1)              # noqa: E731
            p = params[name]
            for key in ("scale", "offset"):
                tv._check_shape(f"{name}/{key}", flat(p[key]).shape, (c,))
            stats = {}
            for ours, ema in (("mean", "mean_ema"), ("var", "var_ema")):
                s = state.get(f"{name}/~/{ema}")
                if s is None:
                    raise UserError(f"the Haiku state has no {name}/~/{ema}: BN averages are "
                                    f"needed (online_state)")
                stats[ours] = flat(s["average"])
            tv._set(out_p, path, {"scale": flat(p["scale"]), "bias": flat(p["offset"])})
            tv._set(out_s, path, stats)
    extra = sorted(k for k in params if k.startswith(top + "/") and k not in used)
    if extra:
        raise UserError(f"the Haiku params have {len(extra)} modules a ResNet-{cfg['depth']} "
                        f"does not, e.g. {extra[0]!r}")
    return cfg, {"params": out_p, "batch_stats": out_s}
