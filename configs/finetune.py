"""Semi-supervised fine-tuning of a pretrained encoder (SimCLRv2), the whole network.

    python -m simclr_jax.main --config configs/finetune.py:imagenet_1pct \
        --config.init_from=runs/simclr_v2_r50 --workdir runs/simclr_v2_r50_ft1pct

Presets (SimCLRv2 README / paper: LARS lr 0.005 x sqrt(B), no weight decay, no warmup, cosine,
batch 1024, global BN, classifier zero-initialised on projector layer 1; 60 epochs for 1% of
the labels, 30 for 10% (paper, appendix B.5)):
imagenet_1pct / imagenet_10pct — TFDS imagenet2012_subset/1pct|10pct (split train; the official
    subsets), evaluated on the ImageNet validation set. Published (R50 1x, 3-layer head):
    57.9 / 68.4 top-1; R152 3x+SK: 74.9 / 80.1. Needs the TFDS subset prepared under
    --config.dataset.data_dir.
cifar10_10pct — CIFAR-10 with a deterministic class-balanced 10% of the train labels
    (finetune.label_fraction=0.1, finetune.subset_seed), batch 256, 30 epochs, evaluated on test.
    Any other dataset: --config.dataset.name=... --config.finetune.label_fraction=0.01.
ft_proj_selector: fine-tune from projector layer k (0 = classifier on the backbone features).
Deliberate differences from the official code: FIDELITY.md.
Output: workdir/finetune.json (top1, top5, num_eval_examples, num_labelled_examples, ...), a
checkpoint and classifier.json: the workdir is a teacher for configs/distill.py.
"""
import ml_collections
from ml_collections import config_dict

from simclr_jax.config_base import with_presets
from simclr_jax.evaluate.protocol_config import protocol_config

PRESETS = ("imagenet_1pct", "imagenet_10pct", "cifar10_10pct")


@with_presets(PRESETS, default="imagenet_1pct")
def get_config(arg):
    c = protocol_config("finetune")
    c.finetune = ml_collections.ConfigDict()
    c.finetune.ft_proj_selector = 1
    c.finetune.label_fraction = config_dict.placeholder(float)  # None: every train label
    c.finetune.subset_seed = 0
    c.optimizer.name = "lars"
    c.optimizer.base_lr = 0.005
    c.optimizer.lr_scaling = "sqrt"
    c.optimizer.weight_decay = 0.0
    c.optimizer.momentum = 0.9
    c.lr_schedule = "cosine"
    c.warmup_epochs = 0.0
    c.num_epochs = 60.0 if arg.endswith("1pct") else 30.0
    c.classifier.zero_init = True
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    if arg.startswith("imagenet"):
        c.dataset.name = f"imagenet2012_subset/{arg.split('_')[1]}"
        c.dataset.train_split = "train"
        c.dataset.eval_split = "validation"
        c.batch_size = 1024
        c.eval.batch_size = 1024
    else:
        c.dataset.name = "cifar10"
        c.dataset.train_split = "train"
        c.dataset.eval_split = "test"
        c.finetune.label_fraction = 0.1
        c.batch_size = 256
        c.eval.batch_size = 512
    return c
