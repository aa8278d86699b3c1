"""Standalone weighted-kNN evaluation of a pretrained encoder (no training).

    python -m simclr_jax.main --config configs/knn_eval.py \
        --config.init_from=runs/pretrain --workdir runs/pretrain_knn

The same evaluator the pretraining loop runs (`knn.KnnEvaluator`), on a checkpoint of choice,
with the option to change the memory bank / test split, k or the temperature. Writes the result
as JSON and, to TensorBoard, the accuracy and a grid of test images with their neighbours.
"""
from __future__ import annotations

import ml_collections

from simclr_jax import parallel
from simclr_jax.data import sources
from simclr_jax.evaluate import classifier as clf
from simclr_jax.evaluate import knn, supervised
from simclr_jax.methods import encoder_network, method_of
from simclr_jax.errors import UserError

RESULTS = "knn_eval.json"


def resolve(config, pre) -> ml_collections.ConfigDict:
    """The evaluator's view of the config: fields left unset come from the pretraining run."""
    pick = lambda value, default: default if value is None else value  # noqa: E731
    ds, pds = config.dataset, pre.dataset
    same = ds.name in (None, pds.name)
    out = ml_collections.ConfigDict({
        "dataset": {
            "name": pick(ds.name, pds.name),
            "data_dir": pick(ds.data_dir, pds.get("data_dir")),
            "knn_train_split": pick(ds.knn_train_split, pds.knn_train_split if same else "train"),
            "knn_test_split": pick(ds.knn_test_split, pds.knn_test_split if same else None),
            "image_size": pick(ds.image_size, pds.image_size),
        },
        "eval": {
            "batch_size": config.eval.batch_size,
            "knn_k": pick(config.eval.knn_k, pre.eval.knn_k),
            "knn_temperature": pick(config.eval.knn_temperature, pre.eval.knn_temperature),
        },
        "normalize": pre.aug.view1.get("normalize", "none"),   # images as in pretraining
    })
    if not out.dataset.knn_train_split or not out.dataset.knn_test_split:
        raise UserError("kNN needs a memory bank and a test split: set "
                         "--config.dataset.knn_train_split and --config.dataset.knn_test_split.")
    return out


def run(config, workdir: str) -> dict:
    """kNN accuracy of the encoder in config.init_from; writes workdir/knn_eval.json."""
    pre, arrays = clf.load_pretraining(config.init_from, config.get("init_step"),
                                      config.get("init_encoder"))
    resolved = resolve(config, pre)
    mesh = parallel.make_mesh()
    parallel.check_batch_divisible(resolved.eval.batch_size, mesh, "eval.batch_size")
    network = encoder_network(method_of(pre), pre)   # the method's encoder
    ds, ev = resolved.dataset, resolved.eval
    evaluator = knn.KnnEvaluator(
        network, mesh, bank=sources.get_source(ds.name, ds.knn_train_split, ds.data_dir),
        test=sources.get_source(ds.name, ds.knn_test_split, ds.data_dir),
        image_size=ds.image_size, batch_size=ev.batch_size, k=ev.knn_k,
        temperature=ev.knn_temperature, normalize=resolved.normalize)
    params = parallel.replicate(mesh, arrays["params"])       # load_pretraining: the encoder's
    stats = parallel.replicate(mesh, arrays.get("batch_stats", {}))
    results = evaluator(params, stats)
    results.update({"step": int(arrays["step"]), "init_from": config.init_from,
                    "dataset": resolved.dataset.name,
                    "bank_split": resolved.dataset.knn_train_split,
                    "test_split": resolved.dataset.knn_test_split,
                    "num_bank_examples": evaluator.bank.num_examples,
                    "num_test_examples": evaluator.test.num_examples,
                    "k": resolved.eval.knn_k, "temperature": resolved.eval.knn_temperature})
    supervised.write_config(workdir, config)
    supervised.write_json(workdir, RESULTS, results)
    writer = supervised.make_writer(workdir)
    writer.write_scalars(results["step"], {k: v for k, v in results.items()
                                           if k in ("knn_top1", "knn_top5")})
    neighbours = evaluator.neighbours_image()
    if neighbours is not None:
        writer.write_images(results["step"], {"knn_neighbours": neighbours})
    writer.flush()
    return results
