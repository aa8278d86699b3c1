"""Augmentation presets of the reference implementations, as typed ConfigDicts.

Every preset returns ALL the fields `augment_tf.augment_view` reads, so a config override such as
`--config.aug.view2.solarize_prob=0.2` is type-checked and a typo fails loudly. Only
ml_collections is imported here: config files import this module without pulling TensorFlow in.
"""
from __future__ import annotations

import copy

import ml_collections
from ml_collections import config_dict
from simclr_jax.data import normalization
from simclr_jax.errors import UserError


def view(*, crop_area_min: float = 0.08, crop_area_max: float = 1.0,
         crop_aspect_min: float = 3 / 4, crop_aspect_max: float = 4 / 3,
         resize_method: str = "bicubic", antialias: bool = False, flip_prob: float = 0.5,
         jitter_prob: float = 0.8, brightness: float = 0.8,
         brightness_mode: str = "multiplicative", contrast: float = 0.8, saturation: float = 0.8,
         hue: float = 0.2, grayscale_prob: float = 0.2, grayscale_first: bool = False,
         blur_prob: float = 0.0, blur_sigma_min: float = 0.1, blur_sigma_max: float = 2.0,
         solarize_prob: float = 0.0, normalize: str = "none",
         image_size: int | None = None) -> ml_collections.ConfigDict:
    """One view's policy with every field spelled out (floats stay floats for type checks).
    image_size: this view's output size; None = the dataset's `image_size` (multi-crop methods
    give their small crops their own size)."""
    cfg = ml_collections.ConfigDict(dict(
        crop_area_min=float(crop_area_min), crop_area_max=float(crop_area_max),
        crop_aspect_min=float(crop_aspect_min), crop_aspect_max=float(crop_aspect_max),
        resize_method=str(resize_method), antialias=bool(antialias), flip_prob=float(flip_prob),
        jitter_prob=float(jitter_prob), brightness=float(brightness),
        brightness_mode=str(brightness_mode), contrast=float(contrast),
        saturation=float(saturation), hue=float(hue), grayscale_prob=float(grayscale_prob),
        grayscale_first=bool(grayscale_first), blur_prob=float(blur_prob),
        blur_sigma_min=float(blur_sigma_min), blur_sigma_max=float(blur_sigma_max),
        solarize_prob=float(solarize_prob), normalize=str(normalize),
        image_size=config_dict.placeholder(int)))
    cfg.image_size = image_size
    check_view("view", cfg)
    return cfg


RESIZE_METHODS = ("bicubic", "bilinear", "nearest", "area", "lanczos3")
PROBABILITIES = ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")


def view_names(aug) -> list[str]:
    """The names of the configured views in `aug` (a config's `aug` section), "view1".."viewV"
    in order; gaps are refused."""
    names = sorted((k for k in aug.keys() if k.startswith("view") and k[4:].isdigit()),
                   key=lambda k: int(k[4:]))
    for v, name in enumerate(names, start=1):
        if name != f"view{v}":
            raise UserError(f"aug has {', '.join(names)}: views must be numbered view1, view2, "
                            f"... without gaps.")
    return names


def check_view(name: str, view) -> None:
    """One clear line for the first impossible setting of one view's policy (`aug.<name>`),
    before any work starts: a bad command-line override must not fail inside a TF graph."""
    def fail(msg: str):
        raise UserError(f"aug.{name}.{msg}")

    if view.brightness_mode not in ("multiplicative", "additive"):
        fail(f"brightness_mode={view.brightness_mode!r}: use 'multiplicative' (SimCLR: "
             f"x * U[1-s, 1+s]) or 'additive' (BYOL: x + U[-s, s]).")
    if view.resize_method not in RESIZE_METHODS:
        fail(f"resize_method={view.resize_method!r}: use one of {', '.join(RESIZE_METHODS)}.")
    try:
        normalization.mean_std(view.normalize)
    except UserError as e:
        fail(str(e))
    for key in PROBABILITIES:
        if not 0.0 <= view[key] <= 1.0:
            fail(f"{key}={view[key]} is a probability: give a value in [0, 1].")
    if not 0.0 < view.crop_area_min <= view.crop_area_max <= 1.0:
        fail(f"crop_area_min/max=({view.crop_area_min}, {view.crop_area_max}): need "
             f"0 < min <= max <= 1 (fractions of the image area).")
    if not 0.0 < view.crop_aspect_min <= view.crop_aspect_max:
        fail(f"crop_aspect_min/max=({view.crop_aspect_min}, {view.crop_aspect_max}): need "
             f"0 < min <= max.")
    for key in ("brightness", "contrast", "saturation"):
        if view[key] < 0.0:
            fail(f"{key}={view[key]}: strengths are >= 0 (0 turns the op off).")
    if not 0.0 <= view.hue <= 0.5:
        fail(f"hue={view.hue}: give a value in [0, 0.5] (a hue shift is mod 1).")
    if not 0.0 < view.blur_sigma_min <= view.blur_sigma_max:
        fail(f"blur_sigma_min/max=({view.blur_sigma_min}, {view.blur_sigma_max}): need "
             f"0 < min <= max.")
    size = view.get("image_size")
    if size is not None and size < 1:
        fail(f"image_size={size}: give a positive size in pixels (or leave it unset for the "
             f"dataset's image_size).")


def simclr(strength: float = 1.0, blur_prob: float = 0.5,
           crop_area_min: float = 0.08) -> ml_collections.ConfigDict:
    """SimCLR: colour distortion of strength s (1.0 ImageNet, 0.5 CIFAR with blur_prob=0)."""
    s = float(strength)
    return view(crop_area_min=crop_area_min, brightness=0.8 * s, contrast=0.8 * s,
                saturation=0.8 * s, hue=0.2 * s, jitter_prob=0.8, grayscale_prob=0.2,
                blur_prob=blur_prob, normalize="none")


def moco_v1() -> ml_collections.ConfigDict:
    """MoCo v1: grayscale p=0.2 BEFORE an always-on jitter (0.4, 0.4, 0.4, 0.4), no blur.

    torchvision's RandomResizedCrop interpolates bilinearly (PIL: antialiased when downscaling),
    hence "bilinear" with antialias for the MoCo presets.
    """
    return view(crop_area_min=0.2, resize_method="bilinear", antialias=True, grayscale_prob=0.2,
                grayscale_first=True, jitter_prob=1.0, brightness=0.4, contrast=0.4,
                saturation=0.4, hue=0.4, blur_prob=0.0, normalize="imagenet")


def moco_v2() -> ml_collections.ConfigDict:
    """MoCo v2 ("aug+"): jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2, blur 0.5."""
    return view(crop_area_min=0.2, resize_method="bilinear", antialias=True, jitter_prob=0.8,
                brightness=0.4,
                contrast=0.4, saturation=0.4, hue=0.1, grayscale_prob=0.2, blur_prob=0.5,
                normalize="imagenet")


def _byol_family(blur_prob: float, solarize_prob: float, crop_area_min: float,
                 resize_method: str, antialias: bool,
                 brightness_mode: str) -> ml_collections.ConfigDict:
    return view(crop_area_min=crop_area_min, resize_method=resize_method, antialias=antialias,
                jitter_prob=0.8, brightness=0.4, brightness_mode=brightness_mode, contrast=0.4,
                saturation=0.2, hue=0.1, grayscale_prob=0.2, blur_prob=blur_prob,
                solarize_prob=solarize_prob, normalize="imagenet")


def byol_view1() -> ml_collections.ConfigDict:
    """BYOL view 1: blur always, never solarize. BYOL's brightness is additive (x + U[-0.4, 0.4],
    deepmind-research byol/utils/augmentations.py) and its bicubic resize is not antialiased."""
    return _byol_family(1.0, 0.0, 0.08, "bicubic", False, "additive")


def byol_view2() -> ml_collections.ConfigDict:
    """BYOL view 2: blur p=0.1, solarize p=0.2."""
    return _byol_family(0.1, 0.2, 0.08, "bicubic", False, "additive")


def moco_v3_view1(crop_area_min: float = 0.08) -> ml_collections.ConfigDict:
    """MoCo v3 uses BYOL's asymmetric views through torchvision: bilinear, antialiased (PIL),
    and torchvision's ColorJitter brightness is multiplicative. Its R50 recipes may set 0.2."""
    return _byol_family(1.0, 0.0, crop_area_min, "bilinear", True, "multiplicative")


def moco_v3_view2(crop_area_min: float = 0.08) -> ml_collections.ConfigDict:
    return _byol_family(0.1, 0.2, crop_area_min, "bilinear", True, "multiplicative")


def two_views(view1: ml_collections.ConfigDict, view2: ml_collections.ConfigDict,
              on_device: bool = False) -> ml_collections.ConfigDict:
    """{view1, view2, on_device} for `pipeline.pretrain_batches`; copies so the views never alias.

    on_device: the host only decodes, crops, resizes and flips, and ships uint8; colour jitter,
    grayscale, blur, solarize and normalisation run in the jitted step (`augment_jax`).
    """
    return ml_collections.ConfigDict(dict(view1=copy.deepcopy(view1),
                                          view2=copy.deepcopy(view2), on_device=bool(on_device)))
