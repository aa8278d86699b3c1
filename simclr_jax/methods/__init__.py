"""The method plug-in: a self-supervised method is one file in this package.

`config.method = "NAME"` selects `simclr_jax/methods/NAME.py`, whose module attribute `METHOD`
is an instance of a `Method` subclass. Nothing outside this package knows a method's name: the
trainer, the checkpoints, the evaluation protocols and export only talk to this contract.

What a method provides (defaults in `Method`; override what differs):

  config_section() -> (name, ConfigDict) | None   the config section it owns (e.g. its queue)
  state_config_keys: tuple[str, ...]   config prefixes that shape its state (resume safety)
  runlocal(c)                          shrink its own sizes for a CPU run (config_base.runlocal)
  validate(config, ctx)                raise UserError on impossible settings, before any work
  num_views: (min, max)                how many `aug.view*` it consumes (views may differ in size)
  needs_index: bool                    the batch must carry "index" (random-access sources only)
  build_network(config, num_classes)   the online Flax module (variables: params, batch_stats)
  init_state(config, network, variables, rng, ctx) -> pytree   its ONE state (EMA target,
                                       queue, memory bank, centre, ...); {} when it has none
  state_sharding(config, ctx, state) -> pytree of PartitionSpec | None   None = replicated; a
                                       per-example bank shards its rows over the "data" axis
  compute_loss(network, config, params, state, batch, rng, ctx)
      -> (loss, (batch_stats, method_state, metrics))   loss is what is differentiated (the
                                       method's loss + the online probe's); metrics["loss"] is
                                       the method's loss alone, the number the references report
  after_update(network, config, state, ctx) -> (state, metrics)   after the optimizer step
                                       (state.step is already k + 1): EMA updates and the like
  param_groups(config, ctx) -> tuple[ParamGroup, ...]   per-group LR multiplier, fixed LR,
                                       weight decay off, frozen until a step
  encoder(config) -> EncoderSpec       which module and which variables the kNN monitor,
                                       knn_eval, linear_eval, finetune, export and load_encoder use

The batch a method receives: "view1".."viewV" (float32 [B, S_v, S_v, 3], each view with its own
size and augmentation policy, `aug.view{v}`), "label" int32 [B] (-1 where unknown) and "index"
int32 [B] (the example's position in the training split; -1 on streamed sources).
Everything is a pure function of its arguments: no method keeps Python state between steps.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from typing import Any, Callable, Optional, Sequence

from simclr_jax.data import aug_presets
from simclr_jax.errors import UserError

FOREVER = 2 ** 31 - 1   # ParamGroup.frozen_until_step: never trained


@dataclasses.dataclass(frozen=True)
class Context:
    """Static facts of the run every method call may read (fixed for the whole run)."""
    total_steps: int
    steps_per_epoch: int
    num_train_examples: int
    global_batch_size: int
    mesh: Any = None          # jax.sharding.Mesh with a "data" axis, or None outside training


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """Parameters whose path starts with `path` (e.g. ("predictor",)) train differently.

    lr_multiplier: the group's LR is this x the schedule's (the online probe's short-run LR).
    fixed_lr: the group's LR stays at the schedule's peak, no warmup or decay (SimSiam's
      `--fix-pred-lr`), times lr_multiplier.
    weight_decay: False excludes the group from weight decay and LARS' trust ratio.
    frozen_until_step: the group does not move (and its optimizer state does not advance)
      before this step; FOREVER = never (MoCo v3's random patch projection).
    """
    path: tuple
    lr_multiplier: float = 1.0
    fixed_lr: bool = False
    weight_decay: bool = True
    frozen_until_step: int = 0


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What evaluation and export use as "the encoder" of a method.

    backbone: a module mapping preprocessed images [B, H, W, 3] to features [B, F] (train=False
      for inference), rebuilt from the pretraining config alone.
    variables: checkpoint arrays {"params", "batch_stats", "method_state"} -> the variables in
      the online network's naming, {"params": {"backbone": ..., ["projector": ...]},
      "batch_stats": {...}}: evaluation grafts "backbone" (and SimCLR v2's fine-tuning the
      projector layers) by name.
    """
    backbone: Any
    variables: Callable[[dict], dict]


def online_variables(arrays: dict) -> dict:
    """The default encoder variables: the online network's backbone and projector."""
    keep = ("backbone", "projector")
    return {part: {k: v for k, v in (arrays.get(part) or {}).items() if k in keep}
            for part in ("params", "batch_stats")}


class Method:
    """Defaults of the contract: two or more views, no state, the online backbone as encoder."""

    num_views: tuple = (2, 2)
    needs_index: bool = False
    state_config_keys: tuple = ()

    # ---------------------------------------------------------------- config
    def config_section(self):
        return None

    def runlocal(self, c) -> None:
        """Shrink this method's own sizes (queues, banks, prototypes) for a CPU run."""

    def validate(self, config, ctx: Context) -> None:
        if config.loss.temperature <= 0:
            raise UserError(f"loss.temperature must be > 0, got {config.loss.temperature}")

    # ---------------------------------------------------------------- network and state
    def build_network(self, config, num_classes: int):
        raise NotImplementedError

    def init_state(self, config, network, variables, rng, ctx: Context) -> dict:
        return {}

    def state_sharding(self, config, ctx: Context, state) -> Optional[Any]:
        return None

    # ---------------------------------------------------------------- step
    def compute_loss(self, network, config, params, state, batch, rng, ctx: Context):
        raise NotImplementedError

    def after_update(self, network, config, state, ctx: Context):
        return state, {}

    def param_groups(self, config, ctx: Context) -> tuple:
        return probe_group(config) + frozen_backbone_groups(config)

    # ---------------------------------------------------------------- evaluation
    def encoder(self, config) -> EncoderSpec:
        from simclr_jax.models import build_backbone
        return EncoderSpec(backbone=build_backbone(config.model), variables=online_variables)


def probe_group(config) -> tuple:
    """The online probe trains at probe.lr_multiplier x the LR, without weight decay."""
    return (ParamGroup(("probe",), lr_multiplier=float(config.probe.get("lr_multiplier", 1.0)),
                       weight_decay=False),)


def frozen_backbone_groups(config) -> tuple:
    """Backbone parameters the model config freezes (ViT's stop_grad_patch_embed)."""
    from simclr_jax.models import frozen_param_paths
    return tuple(ParamGroup(("backbone",) + path, frozen_until_step=FOREVER)
                 for path in frozen_param_paths(config.model))


def encoder_network(method: Method, config):
    """The module the kNN monitor and knn_eval apply (its `encode`): the method's encoder
    backbone, followed by the projector when eval.knn_features == "projection"."""
    from simclr_jax.methods.network import EncoderNetwork
    projector, features = None, config.eval.get("knn_features", "backbone")
    if features not in ("backbone", "projection"):
        raise UserError(f"eval.knn_features must be 'backbone' or 'projection', got "
                        f"{features!r}")
    if features == "projection":
        projector = getattr(method.build_network(config, 0), "projector", None)
        if projector is None:
            raise UserError(f"eval.knn_features='projection': method {config.method} has no "
                            f"projector; use eval.knn_features='backbone'.")
    return EncoderNetwork(backbone=method.encoder(config).backbone, projector=projector)


# ----------------------------------------------------------------------------- registry

_HELPERS = ("common", "network", "legacy")


@functools.lru_cache(maxsize=None)
def available() -> tuple:
    """Names of the method files in this package (every module with a METHOD)."""
    import simclr_jax.methods as package
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _HELPERS and hasattr(_module(info.name), "METHOD"):
            names.append(info.name)
    return tuple(sorted(names))


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def get_method(name: str) -> Method:
    if not isinstance(name, str) or name not in available():
        raise UserError(f"unknown method {name!r}; valid: {', '.join(available())} "
                        f"(set --config.method=...)")
    return _module(name).METHOD


def method_of(config) -> Method:
    """The config's method; a config without one (a backbone imported from a weights file)
    gets the contract's defaults: its backbone is the encoder."""
    return get_method(config.method) if config.get("method") else Method()


def config_sections() -> dict:
    """{section name: default ConfigDict} of every method (the config schema's method part)."""
    sections = {}
    for name in available():
        section = get_method(name).config_section()
        if section is not None:
            sections[section[0]] = section[1]
    return sections


def state_config_keys(method_name) -> tuple:
    """Config prefixes of a run's method that shape its state (workdir resume safety); the
    sections of other methods do not concern the run."""
    if method_name not in available():
        return ()
    return tuple(get_method(method_name).state_config_keys)


def check_views(method_name: str, method: Method, config) -> None:
    lo, hi = method.num_views
    n = len(aug_presets.view_names(config.aug))
    if not lo <= n <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise UserError(f"method {method_name} uses {want} augmented views, the config has {n} "
                        f"(aug.view1..); use the method's config file or add/remove aug.view*.")


def paths_match(path: Sequence, prefix: Sequence) -> bool:
    return tuple(path[:len(prefix)]) == tuple(prefix)
