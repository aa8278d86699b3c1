"""Our ResNet -> a detectron2 backbone pickle, with the names MoCo's
detection/convert-pretrain-to-detectron2.py writes (facebookresearch/moco, commit 8976944^):
torchvision names with `stem.` before the stem's, `layerN` -> `resN+1`, `bnK` -> `convK.norm`,
`downsample.0` -> `shortcut`, `downsample.1` -> `shortcut.norm`; the pickle is
{"model": {name: np.ndarray}, "__author__": ..., "matching_heuristics": True}.

The detectron2 config that computes our function is MoCo's (detection/configs/*_moco.yaml):
torchvision-style stride on the 3x3 conv and RGB input normalised as in training, in 0..255
units (`detectron2_notes`).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from simclr_jax.data import normalization
from simclr_jax.weights import torchvision as tv

AUTHOR = "simclr_jax"


def detectron2_notes(normalize: str) -> list:
    """The detectron2 config keys that feed this encoder what it was trained on (MoCo's
    detection/configs/*_moco.yaml for ImageNet normalisation)."""
    stats = normalization.mean_std(normalize)
    mean, std = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) if stats is None else stats
    show = lambda v: "[" + ", ".join(f"{255 * float(x):.3f}" for x in v) + "]"  # noqa: E731
    return [f"detectron2 config: MODEL.RESNETS.STRIDE_IN_1X1: False, INPUT.FORMAT: 'RGB', "
            f"MODEL.PIXEL_MEAN: {show(mean)}, MODEL.PIXEL_STD: {show(std)}, "
            f"MODEL.WEIGHTS: this file"]


def rename(torch_name: str) -> str:
    """A torchvision ResNet name -> detectron2's (the converter's renaming, in its order)."""
    k = torch_name
    if "layer" not in k:
        k = "stem." + k
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    return k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def to_detectron2(model_cfg, variables) -> dict:
    """The pickle's object for our ResNet variables (ImageNet stem, torchvision layout)."""
    sd: Dict[str, np.ndarray] = tv.to_torch(model_cfg, variables)
    return {"model": {rename(k): v for k, v in sd.items()}, "__author__": AUTHOR,
            "matching_heuristics": True}
