"""The full config schema with defaults. Every config file starts from `base_config()`.

Keeping the schema in one place means a mistyped override (`--config.optimiser.base_lr`) fails
with "did you mean", and every method reads the same field names.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from simclr_jax import methods
from simclr_jax.data import aug_presets
from simclr_jax.errors import UserError


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "pretrain"                    # pretrain | knn_eval | linear_eval | finetune | distill
    c.method = config_dict.placeholder(str)   # a file in simclr_jax/methods/ (its config file
                                              # sets it: configs/<method>.py)
    c.seed = 0
    # Start from these weights instead of a random init (pretraining: the online backbone,
    # init_weights.py; evaluation protocols: the encoder evaluated): a weights file
    # (simclr_jax.weights.released) or a pretraining workdir, its step, and another encoder
    # inside the file than the one its reference evaluates ("student", "ema_model/", ...).
    c.init_from = config_dict.placeholder(str)
    c.init_step = config_dict.placeholder(int)
    c.init_encoder = config_dict.placeholder(str)

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "digits"              # "digits" | TFDS name | "folder:/path" | "npz:/path"
    c.dataset.data_dir = config_dict.placeholder(str)   # TFDS data_dir
    c.dataset.train_split = "train"
    c.dataset.knn_train_split = "train"    # memory bank for kNN ("" disables kNN)
    c.dataset.knn_test_split = "test"
    c.dataset.image_size = 32
    c.dataset.on_device = False            # whole split on the devices, views made in the step
                                           # (data/device_dataset.py); no host pipeline, no TF

    c.batch_size = 256
    c.break_positive_pairs = False         # a negative control, never for training: every
                                           # view and bank index from another row
                                           # (negative_control.py)
    c.num_epochs = config_dict.placeholder(float)  # training length; num_steps overrides it
    c.num_steps = config_dict.placeholder(int)
    c.warmup_epochs = 10.0
    c.lr_schedule = "cosine"               # "cosine" | "step" | "constant" | "cosine_per_epoch"
                                           # | "cosine_per_epoch_from_1" (optim.make_lr_schedule)
                                           # | "linspace_warmup_cosine" (uses the two below)
    c.lr_warmup_start = 0.0                # linspace_warmup_cosine: LR at step 0 (absolute)
    c.lr_final = 0.0                       # linspace_warmup_cosine: LR at the end (absolute)
    c.lr_boundaries_epochs = ()            # for "step": epochs where the LR is multiplied by 0.1
    c.lr_boundary_factors = ()             # for "step", optional: LR = peak x factors[i] from
                                           # boundary i on (one per boundary, not cumulative)

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
    c.optimizer.grad_clip_per_param = config_dict.placeholder(float)  # each tensor's own norm
    c.optimizer.weight_decay_end = config_dict.placeholder(float)  # adamw/sgd: cosine from
                                           # weight_decay to this over the run (None: constant)

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet"
    c.model.depth = 18
    c.model.width = 1.0
    c.model.stem = "cifar"                 # "cifar" (3x3/1, no maxpool) | "imagenet"
    c.model.sk_ratio = 0.0
    c.model.shortcut = "on_shape_change"   # projection shortcut: "on_shape_change" (torchvision)
                                           # | "first_block_of_stage" (SimCLR tf2)
    c.model.stem_pool_padding = "torch"    # ImageNet stem max pool: "torch" (1, 1) | "same" (TF)
    c.model.conv_init = "fan_in_truncated_normal"  # (SimCLR's and BYOL's) | "torchvision"
                                                   # (kaiming normal fan_out; MoCo)
    c.model.zero_init_residual = True      # last BN of every block starts at 0 (not MoCo v1/v2)
    c.model.bn_group_size = config_dict.placeholder(int)  # None = global (cross-replica) BN
    c.model.dtype = "float32"              # compute dtype: "bfloat16" on TPU/GPU for speed
    c.model.variant = "small"              # ViT: "small" | "base" | "tiny_test"
    c.model.patch_size = 16                # ViT
    c.model.stop_grad_patch_embed = False  # ViT: MoCo v3's frozen random patch projection

    c.head = ml_collections.ConfigDict()
    c.head.kind = "bn_mlp"                 # models.heads.HEAD_KINDS: bn_mlp | linear | mlp |
                                           # bn_mlp_nonaffine | bn_mlp_biased
    c.head.num_layers = 2                  # SimCLR v1: 2, v2: 3; MoCo v3 projector: 3 (ResNet)
    c.head.hidden_dim = 0                  # 0 = the backbone's feature width
    c.head.out_dim = 128

    c.predictor = ml_collections.ConfigDict()   # online predictor (MoCo v3, BYOL, SimSiam)
    c.predictor.hidden_dim = 4096
    c.predictor.last_bn = False                 # MoCo v3 ViT: True

    c.ema = ml_collections.ConfigDict()         # EMA target network (MoCo, BYOL, ...)
    c.ema.base = 0.99
    c.ema.schedule = "cosine"                   # "constant" (MoCo v1/v2) | "cosine" (v3, BYOL)

    for name, section in methods.config_sections().items():   # each method's own section
        c[name] = section

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
    c.eval.init_bn_batches = 20            # ... with BN statistics of this many bank batches
    c.eval.knn_features = "backbone"       # "backbone" | "projection" (the MoCo colab's monitor)

    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.log_images = True
    c.profile_first_step = 0               # > 0: a profiler trace (TensorBoard's Profile tab)
    c.profile_num_steps = 5                # of this many steps from that step on (process 0)

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


# ----------------------------------------------------------------------------- presets

RUNLOCAL = "runlocal"


def with_presets(presets: tuple, default: str | None = None):
    """Decorator for a config file's `get_config(preset)`: `--config file.py:ARG` with ARG a
    preset name, `preset,runlocal` or `runlocal` (the default preset, runlocal). An unknown name
    is one clear error listing the valid ones; `runlocal` shrinks any preset to a CPU run of a
    few minutes on the embedded digits (see `runlocal`), like big_vision's configs."""
    def wrap(build):
        import os
        file = os.path.basename(build.__code__.co_filename)

        def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
            parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
            names = [p for p in parts if p != RUNLOCAL]
            if len(names) > 1 or (names and names[0] not in presets):
                valid = ", ".join(presets) if presets else "none"
                raise UserError(f"unknown preset {','.join(names)!r} for {file}; valid: {valid}"
                                f" (optionally followed by ',{RUNLOCAL}').")
            preset = names[0] if names else default
            config = build(preset) if presets else build()
            return runlocal(config) if RUNLOCAL in parts else config

        get_config.__doc__ = build.__doc__
        return get_config
    return wrap


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The same recipe (method, heads, optimizer, schedules, EMA, queue, augmentation) at CPU
    size: the embedded digits at 16 px, the smallest member of the backbone family (ResNet-10;
    ResNet-14 where Selective Kernels need bottlenecks; a 2-block ViT), tiny heads, batch 16,
    20 steps. For trying a preset on a laptop and for the tests; not for accuracy."""
    c = ml_collections.ConfigDict(c)           # a copy: the preset itself is left intact
    protocol = c.get("mode", "pretrain") != "pretrain"
    c.batch_size, c.num_epochs, c.num_steps = 16, None, 20
    c.warmup_epochs = 0.0
    c.log_every_steps, c.checkpoint_every_steps = 5, 10
    c.eval.batch_size = 64
    if protocol:                   # the encoder and its data come from the evaluated run
        if "image_size" in c.dataset:
            c.dataset.image_size = None
        if "model" in c:           # distillation's student
            c.model.depth, c.model.width, c.model.stem = 10, 0.125, "cifar"
        return c
    c.dataset.name, c.dataset.data_dir = "digits", None
    c.dataset.train_split, c.dataset.knn_train_split, c.dataset.knn_test_split = (
        "train", "train", "test")
    c.dataset.image_size = 16
    if c.model.name == "vit":
        c.model.variant, c.model.patch_size = "tiny_test", 4
    elif c.model.sk_ratio > 0:   # Selective Kernels live in bottleneck blocks (+ ResNet-D stem)
        c.model.depth, c.model.width, c.model.stem = 14, 0.125, "imagenet"
    else:
        c.model.depth, c.model.width, c.model.stem = 10, 0.125, "cifar"
    if c.model.get("bn_group_size") is not None:
        c.model.bn_group_size = 4
    c.head.hidden_dim, c.head.out_dim, c.predictor.hidden_dim = 32, 16, 32
    methods.get_method(c.method).runlocal(c)    # the method's own sizes (queues, banks, ...)
    c.eval.every_steps, c.eval.knn_k = 10, 10
    return c
