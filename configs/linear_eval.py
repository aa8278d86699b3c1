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
simclr_cifar10 uses a N(0, 0.01) linear layer like the README's command (no zero init).
moco — MoCo v1/v2: SGD momentum 0.9, lr 30 (batch 256), wd 0, 100 epochs, lr x0.1 at epochs
    60 and 80, N(0, 0.01) linear layer. Published (R50, ImageNet): 60.6 (v1), 67.5 (v2, 200 ep).
moco_v3 / moco_v3_vit — MoCo v3 main_lincls.py: SGD momentum 0.9, wd 0, batch 1024, lr 0.1
    (ResNet) / 3 (ViT) x B/256, cosine stepped once per epoch, 90 epochs, N(0, 0.01) layer.
    Published (ImageNet): R50 68.9 / 72.8 / 74.6 (100 / 300 / 1000 ep); ViT-S 73.2, ViT-B 76.7.
byol — BYOL eval_experiment.py / paper: SGD Nesterov momentum 0.9, lr 0.2 x B/256, cosine, no
    weight decay, batch 1024, 80 epochs. Published (R50, 1000 ep): 74.3.
cmc — CMC LinearProbing.py (--layer 6: both encoders' pooled features, concatenated; the
    encoder converts RGB to Lab itself): SGD momentum 0.9, lr 30 (batch 256; 50 for resnet50v3:
    --config.optimizer.base_lr=50), wd 0, 60 epochs, lr x0.2 at epochs 30, 40 and 50, N(0, 0.01)
    layer. Published (ImageNet): 64.1 (resnet50v2), 68.4 (resnet50v3), FIDELITY.md.
Deliberate differences from the official code: FIDELITY.md.
Training augmentation: random resized crop + flip only, normalised like the pretraining.
Output: workdir/linear_eval.json (top1, top5, num_eval_examples, ...), TensorBoard events, and a
checkpoint of the classifier (backbone kept bit-identical, in state.frozen).
CPU smoke run on the quickstart digits encoder:
    python -m simclr_jax.main --config configs/linear_eval.py:simclr_cifar10 \
        --config.init_from=/tmp/simclr_quickstart --config.batch_size=128 \
        --config.num_epochs=10 --workdir /tmp/simclr_quickstart_linear
"""
from simclr_jax.config_base import with_presets
from simclr_jax.evaluate.protocol_config import protocol_config

PRESETS = ("simclr", "simclr_cifar10", "moco", "moco_v3", "moco_v3_vit", "byol", "cmc")


@with_presets(PRESETS, default="simclr")
def get_config(arg):
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
        c.classifier.zero_init = arg == "simclr"   # --zero_init_logits_layer (ImageNet only)
        c.batch_size, c.num_epochs = (4096, 90.0) if arg == "simclr" else (512, 100.0)
        c.eval.batch_size = 1024 if arg == "simclr" else 512
    elif arg.startswith("moco_v3"):
        c.optimizer.nesterov = False
        c.optimizer.base_lr = 3.0 if arg == "moco_v3_vit" else 0.1
        c.lr_schedule = "cosine_per_epoch"
        c.classifier.zero_init = False
        c.batch_size, c.num_epochs = 1024, 90.0
        c.eval.batch_size = 1024
    elif arg == "byol":
        c.optimizer.nesterov = True
        c.optimizer.base_lr = 0.2
        c.lr_schedule = "cosine"
        c.classifier.zero_init = False
        c.batch_size, c.num_epochs = 1024, 80.0
        c.eval.batch_size = 1024
    else:
        c.optimizer.nesterov = False
        c.optimizer.base_lr = 30.0
        c.lr_schedule = "step"
        c.lr_boundaries_epochs = (60.0, 80.0)
        c.classifier.zero_init = False
        c.batch_size, c.num_epochs = 256, 100.0
        c.eval.batch_size = 256
    if arg == "cmc":    # util.adjust_learning_rate: lr x 0.2 ** (decays passed)
        c.lr_boundaries_epochs, c.lr_boundary_factors = (30.0, 40.0, 50.0), (0.2, 0.04, 0.008)
        c.num_epochs = 60.0
    return c
