"""Distillation (SimCLRv2 self-training): a fine-tuned teacher trains a student on unlabelled data.

    python -m simclr_jax.main --config configs/distill.py:cifar10 \
        --config.teacher_from=runs/simclr_c10_ft10pct --workdir runs/simclr_c10_distilled

The teacher is any finetune / linear_eval / distill workdir; the student is config.model (same or
smaller backbone) with a linear head, trained from scratch with
    alpha * tau^2 * CE(softmax(teacher/tau), student/tau) + (1 - alpha) * CE(labels, student),
alpha = 1 (distillation only, SimCLRv2's default), tau = distill.temperature (1.0).
Dataset fields left unset come from the teacher: its pretraining pool (e.g. all of imagenet2012
train, labels unused) as the train split, its evaluation split, image size and normalisation.
Presets (optimiser settings are this library's starting point -- LARS, lr 0.3 x B/256 for
ImageNet-size, cosine, weight decay 1e-6 -- not a reproduction of the paper's schedule):
imagenet — ResNet-50 1x student, batch 4096, 400 epochs.
cifar10 — ResNet-18 (CIFAR stem) student, batch 512, 200 epochs.
Output: workdir/distill.json (top1, top5, agreement with the teacher, teacher_top1, and the same
before training as *_init), a checkpoint and classifier.json (the student can teach in turn).
Differences from the official code: FIDELITY.md.
"""
import ml_collections
from ml_collections import config_dict

from simclr_jax.config_base import with_presets
from simclr_jax.evaluate.protocol_config import protocol_config

PRESETS = ("imagenet", "cifar10")


@with_presets(PRESETS, default="cifar10")
def get_config(arg):
    c = protocol_config("distill", keep_model=True)
    # init_from / init_step / init_encoder (base_config): the student's backbone starts from
    # these weights (a weights file or a pretraining workdir) instead of from scratch
    c.teacher_from = config_dict.placeholder(str)   # a finetune (or linear_eval) workdir
    c.teacher_step = config_dict.placeholder(int)
    c.distill = ml_collections.ConfigDict()
    c.distill.temperature = 1.0
    c.distill.alpha = 1.0                            # weight of the distillation term
    c.classifier.zero_init = False
    c.optimizer.name = "lars"
    c.optimizer.lr_scaling = "linear"
    c.optimizer.weight_decay = 1e-6
    c.optimizer.momentum = 0.9
    c.lr_schedule = "cosine"
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    if arg == "imagenet":
        c.model.depth, c.model.width, c.model.stem = 50, 1.0, "imagenet"
        c.optimizer.base_lr = 0.3
        c.batch_size, c.num_epochs, c.warmup_epochs = 4096, 400.0, 5.0
        c.eval.batch_size = 1024
    else:
        c.model.depth, c.model.width, c.model.stem = 18, 1.0, "cifar"
        c.optimizer.base_lr = 1.0
        c.batch_size, c.num_epochs, c.warmup_epochs = 512, 200.0, 5.0
        c.eval.batch_size = 512
    return c
