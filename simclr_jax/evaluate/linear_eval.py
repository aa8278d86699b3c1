"""Offline linear evaluation: a linear classifier on a frozen, pretrained backbone.

    python -m simclr_jax.main --config configs/linear_eval.py:simclr \
        --config.init_from=runs/pretrain --workdir runs/pretrain_linear

The backbone runs in BN inference mode (running statistics) on stop-gradient features, and it
lives in `state.frozen`, outside the optimised pytree: neither the gradient, nor weight decay,
nor a BN update can reach it, so after training it is bit-identical to the checkpoint (MoCo's
sanity check, asserted in tests). Only the linear layer (Dense with bias) trains, with random
resized crop + flip augmentation; top-1/top-5 are exact over the evaluation split.
"""
from __future__ import annotations

from simclr_jax.data import sources
from simclr_jax.evaluate import classifier as clf
from simclr_jax.evaluate import supervised

RESULTS = "linear_eval.json"


def linear_task(module: clf.Classifier) -> supervised.Task:
    """Logits of `module` with the frozen part from state.frozen["model"], BN in eval mode."""
    def forward(params, batch_stats, frozen, images, train):
        variables = clf.merge(frozen["model"], params, {})
        logits = module.apply(variables, images, train=False, freeze_features=True)
        return logits, batch_stats                         # nothing to update: stats stay {}

    return supervised.classification_task(forward)


def split_frozen(variables: dict) -> tuple[dict, dict]:
    """Full classifier variables -> (trainable head params, frozen {"params", "batch_stats"})."""
    params = dict(variables["params"])
    head = {clf.HEAD: params.pop(clf.HEAD)}
    return head, {"params": params, "batch_stats": variables.get("batch_stats", {})}


def create_state(module: clf.Classifier, variables: dict, tx, rng, mesh):
    """Linear-eval state: params = the head only; the rest of `variables` is frozen."""
    head, frozen = split_frozen(variables)
    return supervised.create_state(head, {}, {"model": frozen}, tx, rng, mesh)


def run(config, workdir: str) -> dict:
    """Linear evaluation of the pretraining run in config.init_from; writes linear_eval.json."""
    pre, arrays = clf.load_pretraining(config.init_from, config.get("init_step"),
                                      config.get("init_encoder"))
    ds = supervised.resolve_dataset(config.dataset, supervised.inherit_from_pretraining(pre))
    mesh = supervised.make_protocol_mesh(config)
    train_source = sources.get_source(ds.name, ds.train_split, ds.data_dir)
    eval_source = sources.get_source(ds.name, ds.eval_split, ds.data_dir)
    supervised.require_labels(train_source, "linear evaluation")
    normalize = pre.aug.view1.get("normalize", "none")

    meta = clf.describe(pre.model, num_classes=train_source.num_classes,
                        image_size=ds.image_size, normalize=normalize,
                        zero_init=config.classifier.zero_init, pretraining=pre,
                        extra={"protocol": "linear_eval", "init_from": config.init_from,
                               "dataset": ds.to_dict(),
                               "pretrain_dataset": pre.dataset.to_dict()})
    return supervised.train_classifier(
        config, workdir, protocol="linear_eval", meta=meta, arrays=arrays, ds=ds, mesh=mesh,
        train_source=train_source, eval_source=eval_source, normalize=normalize,
        make_state=lambda module, variables, tx, rng: create_state(module, variables, tx, rng,
                                                                  mesh),
        make_task=linear_task, results_file=RESULTS,
        extra_results={"num_train_examples": train_source.num_examples})
