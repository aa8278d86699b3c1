"""Offline linear evaluation of a pretrained encoder (frozen backbone, BN in inference mode).

    python -m simclr_jax.main --config configs/linear_eval.py:simclr \
        --config.init_from=runs/simclr_imagenet --workdir runs/simclr_imagenet_linear

Presets (the dataset, splits and image size default to the pretraining run's; its kNN test split
is the evaluation split; override with --config.dataset.name/train_split/eval_split):
simclr — SimCLR: SGD Nesterov momentum 0.9, lr 0.1 x B/256 (cosine, no warmup), no weight
    decay, batch 4096, 90 epochs, zero-initialised linear layer. Published (R50 1x, ImageNet):
    69.1 (v1), 71.7 (v2) top-1.
simclr_cifar10 — the same for CIFAR-size data: batch 512, 100 epochs (SimCLR README: ~91%
    top-1 for a 1000-epoch CIFAR-10 ResNet pretraining).
moco — MoCo v1/v2: SGD momentum 0.9, lr 30 (batch 256), wd 0, 100 epochs, lr x0.1 at epochs
    60 and 80, N(0, 0.01) linear layer. Published (R50, ImageNet): 60.6 (v1), 67.5 (v2, 200 ep).
Training augmentation: random resized crop + flip only, normalised like the pretraining.
Output: workdir/linear_eval.json (top1, top5, num_eval_examples, ...), TensorBoard events, and a
checkpoint of the classifier (backbone kept bit-identical, in state.frozen).
CPU smoke run on the quickstart digits encoder:
    python -m simclr_jax.main --config configs/linear_eval.py:simclr_cifar10 \
        --config.init_from=/tmp/simclr_quickstart --config.batch_size=128 \
        --config.num_epochs=10 --workdir /tmp/simclr_quickstart_linear
"""
from simclr_jax.evaluate.protocol_config import protocol_config

PRESETS = ("simclr", "simclr_cifar10", "moco")


def get_config(arg="simclr"):
    arg = arg or "simclr"
    if arg not in PRESETS:
        raise ValueError(f"unknown preset {arg!r} for linear_eval; valid: {', '.join(PRESETS)}")
    c = protocol_config("linear_eval")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 0.0
    c.optimizer.lr_scaling = "linear"
    c.warmup_epochs = 0.0
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    if arg.startswith("simclr"):
        c.optimizer.nesterov = True
        c.optimizer.base_lr = 0.1
        c.lr_schedule = "cosine"
        c.classifier.zero_init = True
        c.batch_size, c.num_epochs = (4096, 90.0) if arg == "simclr" else (512, 100.0)
        c.eval.batch_size = 1024 if arg == "simclr" else 512
    else:
        c.optimizer.nesterov = False
        c.optimizer.base_lr = 30.0
        c.lr_schedule = "step"
        c.lr_boundaries_epochs = (60.0, 80.0)
        c.classifier.zero_init = False
        c.batch_size, c.num_epochs = 256, 100.0
        c.eval.batch_size = 256
    return c
