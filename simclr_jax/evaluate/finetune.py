"""Semi-supervised fine-tuning (SimCLRv2): the whole network on 1% / 10% / 100% of the labels.

    python -m simclr_jax.main --config configs/finetune.py:imagenet_1pct \
        --config.init_from=runs/r50_pretrain --workdir runs/r50_ft1pct

The classifier is backbone -> projector layers [0, ft_proj_selector) -> linear head (SimCLRv2
fine-tunes "from the first projection layer": ft_proj_selector=1; 0 puts the head on the backbone
features). Everything trains, BN in training mode with global statistics. Labelled subsets:
ImageNet uses the official TFDS lists (dataset `imagenet2012_subset/1pct` or `/10pct`, split
train); any other dataset takes `finetune.label_fraction` of its train split through
`labelled_subset` (deterministic and class-balanced, evaluate.subsets.class_balanced_subset).

The result (finetune.json) and the checkpoint in workdir/checkpoints, with classifier.json, make
the workdir loadable by `classifier.load` -- the teacher of configs/distill.py.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Optional

import numpy as np

from simclr_jax.data import sources
from simclr_jax.evaluate import classifier as clf
from simclr_jax.evaluate import supervised
from simclr_jax.evaluate.subsets import class_balanced_subset
from simclr_jax.errors import UserError

RESULTS = "finetune.json"


def _check_random_access(source: sources.Source) -> None:
    if not source.random_access:
        raise UserError(f"{source.name}:{source.split} is streamed (too large to hold in "
                         f"memory), so it cannot be subsampled here; use a prepared subset such "
                         f"as TFDS imagenet2012_subset/1pct or a split slice like 'train[:10%]'.")


def subset_source(source: sources.Source, indices, tag: str) -> sources.Source:
    """`source` restricted to `indices`, in that order (random-access sources only)."""
    _check_random_access(source)
    indices = np.asarray(indices, np.int64)
    return dataclasses.replace(source, split=f"{source.split}[{tag}]",
                               num_examples=int(len(indices)), images=source.images[indices],
                               labels=source.labels[indices])


def labelled_subset(source: sources.Source, fraction: Optional[float],
                    seed: int = 0) -> sources.Source:
    """The class-balanced `fraction` of `source`'s labelled examples (`source` itself for None).

    Deterministic in (labels, fraction, seed); each class keeps floor(fraction * n_c + 0.5)
    examples (at least one); unlabelled (-1) examples are dropped.
    """
    if fraction is None:
        return source
    _check_random_access(source)
    labels = np.asarray(source.labels)
    labelled = np.flatnonzero(labels >= 0)                        # [n_labelled]
    if len(labelled) == 0:
        raise UserError(f"{source.name}:{source.split} has no labelled examples to fine-tune on.")
    chosen = labelled[class_balanced_subset(labels[labelled], fraction, seed=seed)]
    return subset_source(source, chosen, f"{fraction:g} of labels, seed {seed}")


def finetune_task(module: clf.Classifier) -> supervised.Task:
    """Every parameter trains; BN in training mode (updates its statistics)."""
    def forward(params, batch_stats, frozen, images, train):
        variables = {"params": params, "batch_stats": batch_stats}
        if not train:
            return module.apply(variables, images, train=False), batch_stats
        logits, mutated = module.apply(variables, images, train=True, mutable=["batch_stats"])
        return logits, mutated["batch_stats"]

    return supervised.classification_task(forward)


def run(config, workdir: str) -> dict:
    """Fine-tune the pretraining run in config.init_from; writes finetune.json + a checkpoint."""
    pre, arrays = clf.load_pretraining(config.init_from, config.get("init_step"),
                                      config.get("init_encoder"))
    ds = supervised.resolve_dataset(config.dataset, supervised.inherit_from_pretraining(pre))
    mesh = supervised.make_protocol_mesh(config)
    full = sources.get_source(ds.name, ds.train_split, ds.data_dir)
    supervised.require_labels(full, "fine-tuning")
    ft = config.finetune
    train_source = labelled_subset(full, ft.label_fraction, ft.subset_seed)
    eval_source = sources.get_source(ds.name, ds.eval_split, ds.data_dir)
    normalize = pre.aug.view1.get("normalize", "none")

    model_cfg = copy.deepcopy(pre.model)
    model_cfg.bn_group_size = None   # global BN while fine-tuning (SimCLR --global_bn=True)
    meta = clf.describe(model_cfg, num_classes=full.num_classes, image_size=ds.image_size,
                        normalize=normalize, ft_proj_selector=ft.ft_proj_selector,
                        head_cfg=pre.head, predictor_cfg=pre.get("predictor"),
                        zero_init=config.classifier.zero_init, pretraining=pre,
                        extra={"protocol": "finetune", "init_from": config.init_from,
                               "dataset": ds.to_dict(),
                               "pretrain_dataset": pre.dataset.to_dict()})
    return supervised.train_classifier(
        config, workdir, protocol="finetune", meta=meta, arrays=arrays, ds=ds, mesh=mesh,
        train_source=train_source, eval_source=eval_source, normalize=normalize,
        make_state=lambda module, variables, tx, rng: supervised.create_state(
            variables["params"], variables["batch_stats"], {}, tx, rng, mesh),
        make_task=finetune_task, results_file=RESULTS,
        extra_results={"train_split": ds.train_split,
                       "num_labelled_examples": train_source.num_examples,
                       "label_fraction": ft.label_fraction,
                       "ft_proj_selector": ft.ft_proj_selector})
