"""The full config schema with defaults. Every config file starts from `base_config()`.

Keeping the schema in one place means a mistyped override (`--config.optimiser.base_lr`) fails
with "did you mean", and every method reads the same field names.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from simclr_jax.data import aug_presets
from simclr_jax.errors import UserError


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "pretrain"                    # pretrain | linear_eval | knn | finetune | distill
    c.method = "simclr"
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "digits"              # "digits" | TFDS name | "folder:/path"
    c.dataset.data_dir = config_dict.placeholder(str)   # TFDS data_dir
    c.dataset.train_split = "train"
    c.dataset.knn_train_split = "train"    # memory bank for kNN ("" disables kNN)
    c.dataset.knn_test_split = "test"
    c.dataset.image_size = 32

    c.batch_size = 256
    c.num_epochs = config_dict.placeholder(float)  # training length; num_steps overrides it
    c.num_steps = config_dict.placeholder(int)
    c.warmup_epochs = 10.0
    c.lr_schedule = "cosine"               # "cosine" | "step" | "constant" | "cosine_per_epoch"
                                           # | "cosine_per_epoch_from_1" (optim.make_lr_schedule)
    c.lr_boundaries_epochs = ()            # for "step": epochs where the LR is multiplied by 0.1

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "lars"              # "lars" | "sgd" | "adamw"
    c.optimizer.base_lr = 0.3
    c.optimizer.lr_scaling = "linear"      # "linear" (x B/256) | "sqrt" (x sqrt(B)) | "none"
    c.optimizer.weight_decay = 1e-6
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.trust_coefficient = 1e-3
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.decay_all = True           # SGD: weight decay on every parameter (PyTorch style)
    c.optimizer.lars_lr = "before_momentum"  # LARS: "before_momentum" (SimCLR, optax) |
                                             # "after_momentum" (BYOL, MoCo v3)
    c.optimizer.grad_clip_norm = config_dict.placeholder(float)

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet"
    c.model.depth = 18
    c.model.width = 1.0
    c.model.stem = "cifar"                 # "cifar" (3x3/1, no maxpool) | "imagenet"
    c.model.sk_ratio = 0.0
    c.model.shortcut = "on_shape_change"   # projection shortcut: "on_shape_change" (torchvision)
                                           # | "first_block_of_stage" (SimCLR tf2)
    c.model.stem_pool_padding = "torch"    # ImageNet stem max pool: "torch" (1, 1) | "same" (TF)
    c.model.conv_init = "simclr"           # "simclr" (fan_in truncated normal; also BYOL) |
                                           # "torchvision" (kaiming normal fan_out; MoCo)
    c.model.zero_init_residual = True      # last BN of every block starts at 0 (not MoCo v1/v2)
    c.model.bn_group_size = config_dict.placeholder(int)  # None = global (cross-replica) BN
    c.model.dtype = "float32"              # compute dtype: "bfloat16" on TPU/GPU for speed
    c.model.variant = "small"              # ViT: "small" | "base" | "tiny_test"
    c.model.patch_size = 16                # ViT
    c.model.stop_grad_patch_embed = False  # ViT: MoCo v3's frozen random patch projection

    c.head = ml_collections.ConfigDict()
    c.head.kind = "simclr"                 # simclr | moco_v1 | moco_v2 | moco_v3 | byol
    c.head.num_layers = 2                  # SimCLR v1: 2, v2: 3; MoCo v3 projector: 3 (ResNet)
    c.head.hidden_dim = 0                  # 0 = the backbone's feature width
    c.head.out_dim = 128

    c.predictor = ml_collections.ConfigDict()   # MoCo v3 / BYOL online predictor
    c.predictor.hidden_dim = 4096
    c.predictor.last_bn = False                 # MoCo v3 ViT: True

    c.ema = ml_collections.ConfigDict()         # EMA target network (MoCo, BYOL)
    c.ema.base = 0.99
    c.ema.schedule = "cosine"                   # "constant" (MoCo v1/v2) | "cosine" (v3, BYOL)

    c.moco = ml_collections.ConfigDict()        # MoCo v1/v2 key queue
    c.moco.queue_size = 65536
    c.moco.shuffle_bn = True
    c.moco.symmetric = False                    # CIFAR-10 colab option: loss_12 + loss_21

    c.simclr = ml_collections.ConfigDict()      # SimCLR v2 option
    c.simclr.memory = False                     # momentum encoder + queue of extra negatives
                                                # (uses moco.queue_size and momentum.*)

    c.loss = ml_collections.ConfigDict()
    c.loss.temperature = 0.1

    c.aug = aug_presets.two_views(aug_presets.simclr(strength=1.0, blur_prob=0.5),
                                  aug_presets.simclr(strength=1.0, blur_prob=0.5))

    c.probe = ml_collections.ConfigDict()
    c.probe.enabled = True                 # online linear probe on stop-gradient features
    c.probe.lr_multiplier = 1.0            # probe LR = this x the pretraining LR (SimCLR: 1)

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 1000
    c.eval.batch_size = 256
    c.eval.knn_k = 200
    c.eval.knn_temperature = 0.1
    c.eval.knn_at_init = True              # also score the randomly initialised encoder at the end
    c.eval.knn_features = "backbone"       # "backbone" | "projection" (the MoCo colab's monitor)

    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.log_images = True

    c.guard = ml_collections.ConfigDict()  # divergence guard (simclr_jax/guard.py)
    c.guard.max_ratio = 10.0               # stop before saving if the interval's loss or param
                                           # norm exceeds this x its running median; <= 0: off
    c.allow_config_change = False          # resume although the state/data-stream config
                                           # changed (recorded in history.jsonl)
    return c


def load_config_file(path: str, preset: str | None = None) -> ml_collections.ConfigDict:
    """get_config(preset) of a config file, as `--config path[:preset]` would load it."""
    import importlib.util
    import os

    name = "simclr_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise UserError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset) if preset is not None else module.get_config()
