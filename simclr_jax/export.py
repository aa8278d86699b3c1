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
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from simclr_jax import checkpoint
from simclr_jax.data import normalization
from simclr_jax.errors import UserError
from simclr_jax.models import build_backbone
from simclr_jax.workdir import _path_problem, as_path

ENCODER_CONFIG = "encoder_config.json"
EXPECTED = "uint8 [B, H, W, 3] (or one [H, W, 3] image), or float in [0, 1]"


def check_images(images) -> tuple[jnp.ndarray, bool]:
    """(images as [B, H, W, 3], whether one [H, W, 3] image was given), or one clear UserError.

    Floats outside [0, 1] (0..255 floats would be silently mistaken for [0, 1] images) and
    anything but 3 channels are refused: the features would be meaningless.
    """
    x = jnp.asarray(images)
    single = x.ndim == 3 and x.shape[-1] == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        hint = ""
        if x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 1):
            hint = " Grayscale? Repeat the channel: np.repeat(x.reshape(*x.shape[:3], 1), 3, -1)."
        elif x.ndim == 4 and x.shape[-1] == 4:
            hint = " RGBA? Drop the alpha channel: x[..., :3]."
        raise UserError(f"the encoder expects {EXPECTED}; got shape {tuple(x.shape)}.{hint}")
    if x.dtype == jnp.uint8:
        return x, single
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise UserError(f"the encoder expects {EXPECTED}; got dtype {x.dtype}.")
    if x.size == 0:   # an empty batch -> [0, F], as for uint8
        return x, single
    bad = int(jnp.sum(~jnp.isfinite(x)))
    if bad:
        raise UserError(f"the encoder expects {EXPECTED}; got {bad} NaN or infinite values "
                        f"(their features would be NaN).")
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if not (lo >= 0.0 and hi <= 1.0):
        raise UserError(f"the encoder expects {EXPECTED}; got floats in [{lo:g}, {hi:g}]. "
                        f"For 0..255 values pass them as uint8 or divide by 255.")
    return x, single


@dataclasses.dataclass
class Encoder:
    """A backbone ready to call: module + variables + the preprocessing it was trained with."""
    module: Any
    variables: dict          # {"params": ..., "batch_stats": ...}
    image_size: int
    normalize: str           # "none" | "imagenet" | "cifar10"
    model_config: dict
    pretraining: dict | None = None   # the pretraining config (rebuilds the method's encoder)

    def preprocess(self, images) -> jnp.ndarray:
        """uint8 or [0, 1] float images [B, H, W, 3] -> the float input the encoder expects."""
        x, _ = check_images(images)
        x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
        if x.shape[1:3] != (self.image_size, self.image_size):
            x = jax.image.resize(x, (x.shape[0], self.image_size, self.image_size, x.shape[3]),
                                 "bilinear")
        return normalization.normalize(x, self.normalize)

    def apply(self, x) -> jnp.ndarray:
        """Features of already-preprocessed images (BN in inference mode)."""
        return self.module.apply(self.variables, x, train=False)

    def __call__(self, images) -> jnp.ndarray:
        """Features [B, F] of images [B, H, W, 3]; [F] for one [H, W, 3] image."""
        features = self._jitted(self.preprocess(images))
        return features[0] if check_images(images)[1] else features

    def __post_init__(self):
        self._jitted = jax.jit(self.apply)


def _encoder_from(module, model_cfg: dict, image_size: int, normalize: str, params,
                  batch_stats, pretraining: dict | None = None):
    return Encoder(module=module, variables={"params": params, "batch_stats": batch_stats},
                   image_size=int(image_size), normalize=normalize, model_config=model_cfg,
                   pretraining=pretraining)


def _method_encoder(config: dict):
    """(backbone module, encoder spec) of a pretraining config's method (the encoder contract)."""
    from simclr_jax.methods import method_of
    cfg = ml_collections.ConfigDict(config)
    spec = method_of(cfg).encoder(cfg)
    return spec.backbone, spec


def load_encoder(path: str, step: int | None = None, encoder: str | None = None) -> Encoder:
    """Encoder from a pretraining workdir (config.json + checkpoints/), an export directory, or
    a weights file (torchvision / timm names, the released MoCo, SimSiam, SwAV, DINO, BYOL and
    SimCLR checkpoints: simclr_jax.weights.released). `encoder` picks another encoder inside a
    weights file ("student", "module.momentum_encoder.", "ema_model/")."""
    from simclr_jax.methods.legacy import migrate_config
    from simclr_jax.weights import released
    root = as_path(path)
    if released.is_weights_path(path):   # a released checkpoint or a torchvision/timm export
        w = released.import_file(path, encoder=encoder)
        return _encoder_from(build_backbone(ml_collections.ConfigDict(w.model_config)),
                             w.model_config, w.image_size, w.normalize, w.params, w.batch_stats)
    if (root / ENCODER_CONFIG).exists():
        meta = json.loads((root / ENCODER_CONFIG).read_text())
        arrays = ocp.StandardCheckpointer().restore(root / "encoder")
        pre = migrate_config(meta.get("pretraining"))
        module = (_method_encoder(pre)[0] if pre else
                  build_backbone(ml_collections.ConfigDict(migrate_config(
                      {"model": meta["model"]})["model"])))
        return _encoder_from(module, meta["model"], meta["image_size"], meta["normalize"],
                             arrays["params"], arrays.get("batch_stats", {}), pre)  # ViT: none
    if encoder:
        raise UserError(f"--encoder {encoder!r} picks an encoder inside a weights file; {path} is "
                        f"a workdir or export directory (its method's encoder is used)")
    workdir = root.parent if root.name == "checkpoints" else root
    if not (workdir / "config.json").exists():
        raise UserError(f"{path} is neither a pretraining workdir (no config.json) nor an export "
                        f"directory (no {ENCODER_CONFIG}).")
    config = migrate_config(json.loads((workdir / "config.json").read_text()))
    module, spec = _method_encoder(config)
    variables = spec.variables(checkpoint.restore_arrays(str(workdir), step))
    return _encoder_from(module, config["model"], config["dataset"]["image_size"],
                         config["aug"]["view1"].get("normalize", "none"),
                         variables["params"]["backbone"],
                         variables["batch_stats"].get("backbone", {}), config)


def export_encoder(workdir: str, out_dir: str, step: int | None = None,
                   encoder: str | None = None) -> str:
    """Write the backbone alone (arrays + encoder_config.json) to out_dir.

    Multi-process: every process restores and takes part in the (orbax) save; process 0 alone
    writes the arrays' files and encoder_config.json."""
    enc = load_encoder(workdir, step, encoder)
    out = as_path(out_dir)
    if jax.process_index() == 0:   # one process writes; the arrays are the same everywhere
        out.mkdir(parents=True, exist_ok=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(out / "encoder", jax.device_get(enc.variables), force=True)
    ckpt.wait_until_finished()
    if jax.process_index() == 0:
        (out / ENCODER_CONFIG).write_text(json.dumps(
            {"model": enc.model_config, "image_size": enc.image_size,
             "normalize": enc.normalize, "num_features": int(enc.module.num_features),
             "pretraining": enc.pretraining},
            indent=2))
    return str(out)


def _check_out(out_dir: str, is_file: bool = False) -> None:
    """--out must be a directory (native) or a file (other formats) in a folder we can create or
    write: one line otherwise, before any work."""
    out = as_path(out_dir)
    try:
        if is_file:
            if out.is_dir():
                raise UserError(f"--out {out_dir} is an existing directory; this format writes "
                                f"one file: pass a file name (.pth, .safetensors or .pkl).")
            out.parent.mkdir(parents=True, exist_ok=True)
            return
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out_dir} is an existing file, not a directory; pass a new "
                            f"or existing directory.")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(_path_problem(out_dir, e).replace("--workdir", "--out")) from None


def main(argv=None):
    p = argparse.ArgumentParser(description="Export the pretrained encoder of a workdir.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--encoder", default=None,
                   help="another encoder inside a weights file than the one its reference "
                        "evaluates: student (DINO), module.momentum_encoder. (MoCo v3), "
                        "ema_model/ (SimCLR v2 TF1)")
    p.add_argument("--format", default="native",
                   choices=("native", "torchvision", "timm", "detectron2"),
                   help="native: an orbax directory for load_encoder (default); torchvision / "
                        "timm: a .pth or .safetensors state dict; detectron2: a .pkl "
                        "(simclr_jax.weights)")
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
        _check_out(a.out, is_file=a.format != "native")
        if a.format == "native":
            out, notes = export_encoder(a.workdir, a.out, a.step, a.encoder), []
        else:
            from simclr_jax.weights import formats
            enc = load_encoder(a.workdir, a.step, a.encoder)
            out = a.out
            if jax.process_index() == 0:
                notes = formats.export(enc.model_config, enc.variables, enc.image_size,
                                       enc.normalize, a.format, a.out)
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0:
        print(out)
        for note in notes:
            print(f"note: {note}")


if __name__ == "__main__":
    main()
