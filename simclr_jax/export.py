"""Export and load a pretrained encoder: three lines from a workdir to features.

    encoder = simclr_jax.load_encoder("runs/simclr_c10")      # pretraining workdir or export dir
    feats = encoder(images)          # images: uint8 [B, H, W, 3] or float in [0, 1] -> [B, F]

Command line (writes the backbone alone, with what is needed to rebuild and preprocess):
    python -m simclr_jax.export --workdir runs/simclr_c10 --out runs/simclr_c10_encoder
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from simclr_jax import checkpoint
from simclr_jax.models import build_backbone

ENCODER_CONFIG = "encoder_config.json"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass
class Encoder:
    """A backbone ready to call: module + variables + the preprocessing it was trained with."""
    module: Any
    variables: dict          # {"params": ..., "batch_stats": ...}
    image_size: int
    normalize: str           # "none" | "imagenet"
    model_config: dict

    def preprocess(self, images) -> jnp.ndarray:
        """uint8 or [0, 1] float images [B, H, W, 3] -> the float input the encoder expects."""
        x = jnp.asarray(images)
        x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
        if x.shape[1:3] != (self.image_size, self.image_size):
            x = jax.image.resize(x, (x.shape[0], self.image_size, self.image_size, x.shape[3]),
                                 "bilinear")
        if self.normalize == "imagenet":
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
        return x

    def apply(self, x) -> jnp.ndarray:
        """Features of already-preprocessed images (BN in inference mode)."""
        return self.module.apply(self.variables, x, train=False)

    def __call__(self, images) -> jnp.ndarray:
        return self._jitted(self.preprocess(images))

    def __post_init__(self):
        self._jitted = jax.jit(self.apply)


def _encoder_from(model_cfg: dict, image_size: int, normalize: str, params, batch_stats):
    module = build_backbone(ml_collections.ConfigDict(model_cfg))
    return Encoder(module=module, variables={"params": params, "batch_stats": batch_stats},
                   image_size=int(image_size), normalize=normalize, model_config=model_cfg)


def load_encoder(path: str, step: int | None = None) -> Encoder:
    """Encoder from a pretraining workdir (config.json + checkpoints/) or an export directory."""
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, ENCODER_CONFIG)):
        with open(os.path.join(path, ENCODER_CONFIG)) as f:
            meta = json.load(f)
        arrays = ocp.StandardCheckpointer().restore(os.path.join(path, "encoder"))
        return _encoder_from(meta["model"], meta["image_size"], meta["normalize"],
                             arrays["params"], arrays["batch_stats"])
    workdir = os.path.dirname(path) if os.path.basename(path) == "checkpoints" else path
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{path!r} is neither a pretraining workdir (no config.json) nor "
                                f"an export directory (no {ENCODER_CONFIG}).")
    with open(config_path) as f:
        config = json.load(f)
    arrays = checkpoint.restore_arrays(workdir, step)
    return _encoder_from(config["model"], config["dataset"]["image_size"],
                         config["aug"]["view1"].get("normalize", "none"),
                         arrays["params"]["backbone"], arrays["batch_stats"].get("backbone", {}))


def export_encoder(workdir: str, out_dir: str, step: int | None = None) -> str:
    """Write the backbone alone (arrays + encoder_config.json) to out_dir.

    Multi-process: every process restores and takes part in the (orbax) save; process 0 alone
    writes the arrays' files and encoder_config.json."""
    enc = load_encoder(workdir, step)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.join(out_dir, "encoder"), jax.device_get(enc.variables), force=True)
    ckpt.wait_until_finished()
    if jax.process_index() != 0:
        return out_dir
    with open(os.path.join(out_dir, ENCODER_CONFIG), "w") as f:
        json.dump({"model": enc.model_config, "image_size": enc.image_size,
                   "normalize": enc.normalize,
                   "num_features": int(enc.module.num_features)}, f, indent=2)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description="Export the pretrained encoder of a workdir.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--distributed", choices=("auto", "on", "off"), default="auto",
                   help="join a JAX cluster as simclr_jax.main does")
    p.add_argument("--coordinator_address", default=None)
    p.add_argument("--num_processes", type=int, default=None)
    p.add_argument("--process_id", type=int, default=None)
    a = p.parse_args(argv)
    from simclr_jax import distributed
    try:
        distributed.join(a.distributed, distributed.resolve_settings(
            a.coordinator_address, a.num_processes, a.process_id))
    except ValueError as e:
        p.error(str(e))
    out = export_encoder(a.workdir, a.out, a.step)
    if jax.process_index() == 0:
        print(out)


if __name__ == "__main__":
    main()
