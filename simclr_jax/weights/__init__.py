"""Weights in and out: our backbones' Flax variables <-> the state dicts other frameworks load.

Everything here works on plain pytrees: a backbone's variables {"params": ..., "batch_stats": ...}
(the model is `simclr_jax.models.build_backbone(model_config)`) and a flat torch-style state dict
{name: np.ndarray} (NCHW / [out, in] layouts). torch is never imported at module level: only
reading or writing a `.pth` file needs it (imported inside that function).

- `torchvision`: ResNet <-> torchvision.models.resnet{18,34,50,101,152} names.
- `timm`: ViT <-> timm VisionTransformer names (MoCo v3's and DINO's ViTs load into timm).
- `detectron2`: the names MoCo's detection/convert-pretrain-to-detectron2.py writes.
- `haiku`: BYOL's pickled Haiku checkpoints (read without byol or haiku installed).
- `files`: .pth / .safetensors / pickle reading and writing.
- `formats`: `python -m simclr_jax.export --format torchvision|timm|detectron2`.
- `released`: the released checkpoints of the reference codebases, format detection, import
  (`load_encoder(FILE)`, `--config.init_from=FILE`).
"""
