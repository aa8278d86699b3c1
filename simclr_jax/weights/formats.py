"""`python -m simclr_jax.export --format torchvision|timm|detectron2 --out FILE`: our encoder's
backbone in another framework's names, plus the notes that say what reproduces our function
there (a stem the framework does not have, the head count, the input normalisation).
"""
from __future__ import annotations

from typing import List

import jax
import numpy as np

from simclr_jax.data import normalization
from simclr_jax.errors import UserError
from simclr_jax.weights import detectron2, files, timm as timm_w, torchvision as tv

EXPORT_FORMATS = ("torchvision", "timm", "detectron2")
SUFFIXES = {"torchvision": (".pth", ".safetensors"), "timm": (".pth", ".safetensors"),
            "detectron2": (".pkl",)}


def input_note(normalize: str) -> str:
    stats = normalization.mean_std(normalize)
    how = ("no normalisation" if stats is None else
           f"normalised with mean {[round(float(m), 4) for m in stats[0]]}, std "
           f"{[round(float(s), 4) for s in stats[1]]}")
    return f"input: RGB in [0, 1], {how}"


def export(model_cfg: dict, variables, image_size: int, normalize: str, fmt: str,
           out: str) -> List[str]:
    """Write `out` in format `fmt`; returns the notes (also stored in a .safetensors' metadata).

    One UserError for a backbone without a counterpart there, or a suffix the format lacks."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    suffix = next((s for s in SUFFIXES[fmt] if out.endswith(s)), None)
    if suffix is None:
        raise UserError(f"--format {fmt} writes {' or '.join(SUFFIXES[fmt])} files; got "
                        f"--out {out!r}")
    variables = jax.device_get(variables)
    if fmt == "timm":
        timm_w.check_standard(model_cfg)
        sd = timm_w.to_torch(model_cfg, variables, int(image_size))
        notes = timm_w.timm_notes(model_cfg, int(image_size))
    else:
        tv.check_standard(model_cfg)
        if fmt == "detectron2":
            if model_cfg.get("stem", "imagenet") != "imagenet":
                raise UserError("a CIFAR-stem ResNet has no detectron2 counterpart (its stem is "
                                "a 7x7/2 conv and a max pool)")
            obj = detectron2.to_detectron2(model_cfg, variables)
            files.save_pickle(out, obj)
            notes = [n for n in tv.torch_notes(model_cfg) if n != tv.FC_NOTE]
            return notes + detectron2.detectron2_notes(normalize)
        sd = tv.to_torch(model_cfg, variables)
        notes = tv.torch_notes(model_cfg)
    notes = notes + [input_note(normalize)]
    if suffix == ".pth":
        files.save_pth(out, sd)
    else:
        files.save_safetensors(out, {k: np.asarray(v) for k, v in sd.items()},
                               {"format": "pt", "framework": fmt,
                                **{f"note{i}": n for i, n in enumerate(notes)}})
    return notes
