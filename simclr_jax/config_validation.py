"""Checks of a config before any work starts: impossible settings fail with a fix, not a trace."""
from __future__ import annotations

from simclr_jax import methods
from simclr_jax.data import aug_presets
from simclr_jax.errors import UserError

DEVICE_RESIZE = ("bicubic", "bilinear")     # augment_jax.RESIZE_METHODS (kept import-light)
SPLIT_KEYS = ("train_split", "knn_train_split", "knn_test_split")


def _fail(msg: str):
    raise UserError(msg)


def validate_config(config) -> None:
    if not config.get("method"):
        _fail(f"no method: set --config.method to one of {', '.join(methods.available())}, or "
              f"start from a method's config file (configs/<method>.py).")
    methods.check_views(config.method, methods.get_method(config.method), config)
    if config.get("num_epochs") is None and config.get("num_steps") is None:
        _fail("set --config.num_epochs or --config.num_steps (num_steps wins when both are set).")
    if config.batch_size <= 0:
        _fail(f"batch_size must be positive, got {config.batch_size}.")
    keep = config.get("keep_checkpoints")
    if keep is not None and keep < 1:
        _fail(f"keep_checkpoints={keep} would keep no checkpoint, so the run could never resume "
              f"and export would find nothing; use 1 or more (default 3).")
    for name in ("log_every_steps", "checkpoint_every_steps"):
        if config[name] <= 0:
            _fail(f"{name} must be positive, got {config[name]}.")
    if config.eval.every_steps <= 0:
        _fail(f"eval.every_steps must be positive, got {config.eval.every_steps}.")
    if config.eval.get("knn_features", "backbone") not in ("backbone", "projection"):
        _fail(f"eval.knn_features must be 'backbone' or 'projection', got "
              f"{config.eval.knn_features!r}.")
    if config.eval.get("init_bn_batches", 20) < 0:
        _fail(f"eval.init_bn_batches must be >= 0 (0: score the encoder at init with its "
              f"initial BN statistics), got {config.eval.init_bn_batches}.")
    views = len(aug_presets.view_names(config.aug)) if "aug" in config else 0
    if config.get("break_positive_pairs") and config.batch_size <= views:
        _fail(f"break_positive_pairs rolls view k by k rows: batch_size={config.batch_size} "
              f"must exceed the {views} views, or some row keeps a pair.")
    if config.eval.knn_k <= 0:
        _fail(f"eval.knn_k must be positive, got {config.eval.knn_k}.")
    group = config.model.get("bn_group_size")
    if group is not None:
        if group <= 0 or config.batch_size % group:
            _fail(f"model.bn_group_size={group} must divide batch_size={config.batch_size}.")
    if config.dataset.image_size < 8:
        _fail(f"dataset.image_size={config.dataset.image_size} is too small (min 8).")
    aug = config.get("aug") or {}
    for name in sorted(k for k in aug.keys() if k.startswith("view")):
        aug_presets.check_view(name, aug[name])
        if config.dataset.get("on_device") and aug[name].resize_method not in DEVICE_RESIZE:
            _fail(f"aug.{name}.resize_method={aug[name].resize_method!r} is not available with "
                  f"dataset.on_device; use one of {', '.join(DEVICE_RESIZE)}.")


def check_splits(config) -> None:
    """Every split the run will read (training and the kNN monitor's), before any file is
    written, with the key to fix named. Cheap: the digits are loaded (they are embedded), a
    folder's split names are checked without scanning it; TFDS splits are checked when read."""
    from simclr_jax.data import sources
    ds = config.dataset
    for key in SPLIT_KEYS:
        split = ds.get(key)
        if key != "train_split" and (not split or not ds.get("knn_train_split")):
            continue   # knn_train_split='' disables the kNN monitor (its test split is unread)
        try:
            if split is None:
                raise UserError("it is not set")
            base, _, _ = sources.parse_split(split)
            if ds.name == "digits":
                sources.get_source("digits", split)
            elif str(ds.name).startswith("folder:") and base not in ("train", "all"):
                raise UserError("a folder dataset has one split, 'train' (or 'all'), sliced per "
                                "class like 'train[:90%]' or 'train[-10%:]'")
        except UserError as e:
            hint = ("" if key == "train_split" else
                    "; set --config.dataset.knn_train_split='' to turn the kNN monitor off")
            raise UserError(f"--config.dataset.{key}={split!r}: {str(e).rstrip('.')}{hint}.") \
                from None
