"""Config schema shared by the evaluation-protocol config files (configs/linear_eval.py, ...).

Each protocol config starts from `config_base.base_config()`; sections that only describe
pretraining (method, heads, augmentation, ...) are removed, because the network is rebuilt from
the pretraining run's own config.json: an override such as --config.model.depth=50 on a linear
evaluation then fails loudly instead of being silently ignored.

Dataset fields left unset (None) are taken from the run being evaluated (its dataset, train split,
kNN test split as the evaluation split, image size), so `--config.init_from=DIR` is enough.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from simclr_jax import methods
from simclr_jax.config_base import base_config
from simclr_jax.data import aug_presets

# (plus every method's own config section: methods.config_sections())
PRETRAINING_ONLY = ("method", "head", "predictor", "ema", "loss", "probe",
                    "log_images", "guard", "allow_config_change", "profile_first_step",
                    "profile_num_steps")


def dataset_fields() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "name": config_dict.placeholder(str),        # None: the evaluated run's dataset
        "data_dir": config_dict.placeholder(str),
        "train_split": config_dict.placeholder(str),
        "eval_split": config_dict.placeholder(str),  # None: the pretraining's knn_test_split
        "image_size": config_dict.placeholder(int),
    })


def crop_flip_aug(crop_area_min: float = 0.08) -> ml_collections.ConfigDict:
    """Random resized crop + horizontal flip, no colour ops (SimCLR / MoCo linear eval and
    fine-tuning). The normalisation is always the pretraining's and is set at run time."""
    view = aug_presets.simclr(strength=1.0, blur_prob=0.0, crop_area_min=crop_area_min)
    view.jitter_prob = 0.0
    view.grayscale_prob = 0.0
    view.blur_prob = 0.0
    return ml_collections.ConfigDict({"view1": view})


def protocol_config(mode: str, *, keep_model: bool = False) -> ml_collections.ConfigDict:
    """Base of linear_eval / finetune / distill configs (supervised training on a classifier)."""
    c = base_config()
    c.mode = mode
    # init_from / init_step / init_encoder (base_config): the pretraining workdir or weights
    # file whose encoder is evaluated (linear_eval, finetune)
    own = tuple(methods.config_sections())
    for key in PRETRAINING_ONLY + own + (() if keep_model else ("model",)):
        del c[key]
    c.dataset = dataset_fields()
    c.aug = crop_flip_aug()
    c.classifier = ml_collections.ConfigDict()
    c.classifier.zero_init = True                # SimCLR zero_init_logits_layer; MoCo: False
    c.warmup_epochs = 0.0
    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256
    c.eval.every_steps = config_dict.placeholder(int)  # None: evaluate at the end only
    c.keep_checkpoints = 2
    return c


def knn_config() -> ml_collections.ConfigDict:
    """Base of the standalone kNN config: no training at all."""
    c = base_config()
    c.mode = "knn_eval"
    keep = {"mode", "seed", "dataset", "eval", "init_from", "init_step", "init_encoder"}
    for key in [k for k in c.keys() if k not in keep]:
        del c[key]
    c.dataset = ml_collections.ConfigDict({
        "name": config_dict.placeholder(str),
        "data_dir": config_dict.placeholder(str),
        "knn_train_split": config_dict.placeholder(str),  # memory bank; None: pretraining's
        "knn_test_split": config_dict.placeholder(str),
        "image_size": config_dict.placeholder(int),
    })
    c.eval = ml_collections.ConfigDict({
        "batch_size": 256,
        "knn_k": config_dict.placeholder(int),             # None: pretraining's (200)
        "knn_temperature": config_dict.placeholder(float),
    })
    return c
