"""Weighted k-nearest-neighbour evaluation of frozen features (InstDisc, Wu et al. 2018).

The kNN monitor is the cheap, hyper-parameter-light signal used during pretraining: no
training, just cosine similarity between test and train features of the backbone.
Exactness matters more than speed here, so every real example is counted exactly once
(padded rows are masked out, never dropped remainders) and the similarity matmul runs in
full float32 precision (no TF32/bf16 passes that could reorder near-tied neighbours).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

_EPS = 1e-12  # like torch.nn.functional.normalize: a zero vector stays zero


def _l2_normalize(x):  # [..., D] -> [..., D]
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, _EPS)


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "top"))
def _knn_chunk(train_n, train_labels, test_chunk, temperature, *, k, num_classes, top):
    """Top-`top` classes by weighted vote for one fixed-size chunk of test rows.

    train_n [N, D] already L2-normalised, train_labels [N] int32, test_chunk [C, D] raw.
    Returns int32 [C, top]: classes sorted by descending score, ties -> lower class index.
    """
    test_n = _l2_normalize(test_chunk.astype(jnp.float32))  # [C, D]
    sim = jnp.matmul(test_n, train_n.T, precision=jax.lax.Precision.HIGHEST)  # [C, N]
    top_sim, top_idx = jax.lax.top_k(sim, k)  # [C, k] each; equal sims -> lower train index
    weights = jnp.exp(top_sim / temperature)  # [C, k]
    nbr_labels = train_labels[top_idx]  # [C, k]
    rows = jnp.arange(test_chunk.shape[0])[:, None]  # [C, 1]
    # Scatter-add instead of a [C, k, num_classes] one-hot: O(C * (k + classes)) memory.
    scores = jnp.zeros((test_chunk.shape[0], num_classes), jnp.float32)
    scores = scores.at[rows, nbr_labels].add(weights)  # [C, num_classes]
    _, classes = jax.lax.top_k(scores, top)  # lax.top_k: equal scores -> lower class index
    return classes.astype(jnp.int32)


def _check_inputs(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk_size):
    if train_feats.ndim != 2 or test_feats.ndim != 2:
        raise ValueError(
            f"features must be 2-D [examples, dim]; got train {train_feats.shape}, "
            f"test {test_feats.shape}. Flatten or pool the backbone output first.")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"train and test feature dims differ: {train_feats.shape[1]} vs {test_feats.shape[1]}.")
    if train_labels.shape != (train_feats.shape[0],):
        raise ValueError(
            f"train_labels must have shape [{train_feats.shape[0]}] to match train_feats; "
            f"got {train_labels.shape}.")
    if not np.issubdtype(train_labels.dtype, np.integer):
        raise ValueError(f"train_labels must be integers, got dtype {train_labels.dtype}.")
    if train_feats.shape[0] == 0:
        raise ValueError("train_feats is empty: kNN needs at least one training example.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if len(train_labels) and (train_labels.min() < 0 or train_labels.max() >= num_classes):
        raise ValueError(
            f"train labels must lie in [0, {num_classes}); got range "
            f"[{train_labels.min()}, {train_labels.max()}]. Drop unlabelled (-1) examples "
            "or pass the right num_classes.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")


def _knn_top_classes(train_feats, train_labels, test_feats, num_classes, k, temperature,
                     chunk_size, top):
    """[M, top] int32 classes ranked by kNN score (the shared core of classify/accuracy)."""
    train_feats = np.asarray(train_feats)
    test_feats = np.asarray(test_feats)
    train_labels = np.asarray(train_labels)
    _check_inputs(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk_size)
    num_test = test_feats.shape[0]
    if num_test == 0:
        return np.zeros((0, top), np.int32)
    k = min(k, train_feats.shape[0])  # fewer train examples than k: vote with all of them
    chunk = min(chunk_size, num_test)  # one compiled shape per call
    train_n = _l2_normalize(jnp.asarray(train_feats, jnp.float32))  # [N, D]
    labels = jnp.asarray(train_labels, jnp.int32)  # [N]
    temp = jnp.float32(temperature)
    out = []
    for start in range(0, num_test, chunk):
        rows = test_feats[start:start + chunk]  # [<=chunk, D]
        valid = rows.shape[0]
        if valid < chunk:  # pad the last chunk so it reuses the compiled shape
            rows = np.concatenate([rows, np.zeros((chunk - valid,) + rows.shape[1:], rows.dtype)])
        classes = _knn_chunk(train_n, labels, jnp.asarray(rows), temp,
                             k=k, num_classes=num_classes, top=top)
        out.append(np.asarray(classes)[:valid])  # drop the padding rows
    return np.concatenate(out)


def knn_classify(train_feats, train_labels, test_feats, num_classes: int, k: int = 200,
                 temperature: float = 0.1, chunk_size: int = 1024) -> np.ndarray:
    """InstDisc weighted kNN: predicted labels [M] np.int32.

    Both feature sets are L2-normalised; for each test row the k most cosine-similar train
    rows (k clipped to N; equal similarities -> lower train index) vote for their label with
    weight exp(sim / temperature). The prediction is the class with the largest summed weight;
    ties go to the LOWEST class index. Test rows are processed `chunk_size` at a time on one
    device (memory ~ chunk_size * N floats for the similarity block); the last chunk is
    zero-padded so the jitted kernel compiles once per call.

    train_feats [N, D], train_labels [N] ints in [0, num_classes), test_feats [M, D].
    """
    return _knn_top_classes(train_feats, train_labels, test_feats, num_classes, k, temperature,
                            chunk_size, top=1)[:, 0]


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes: int,
                 k: int = 200, temperature: float = 0.1, chunk_size: int = 1024) -> dict:
    """kNN accuracy: {"top1": float} plus "top5" when num_classes >= 5, fractions in [0, 1].

    Top-5 ranks classes by the same weighted score as `knn_classify` (ties -> lower class
    index), so top1 here always equals the accuracy of `knn_classify`'s predictions.
    """
    test_labels = np.asarray(test_labels)
    if test_labels.shape != (np.shape(test_feats)[0],):
        raise ValueError(
            f"test_labels must have shape [{np.shape(test_feats)[0]}] to match test_feats; "
            f"got {test_labels.shape}.")
    if test_labels.shape[0] == 0:
        raise ValueError("test set is empty: accuracy is undefined.")
    top = 5 if num_classes >= 5 else 1
    classes = _knn_top_classes(train_feats, train_labels, test_feats, num_classes, k,
                               temperature, chunk_size, top=top)  # [M, top]
    hits = classes == test_labels[:, None]  # [M, top]
    metrics = {"top1": float(np.mean(hits[:, 0]))}
    if top == 5:
        metrics["top5"] = float(np.mean(hits.any(axis=1)))
    return metrics


def _to_host(x) -> np.ndarray:
    """Global array -> full numpy copy on this host.

    A jax.Array spanning several processes is not fully addressable: it is all-gathered with
    multihost_utils.process_allgather(tiled=True), which every process must call (so every
    process must iterate the same batches). Fully addressable arrays and numpy inputs are
    taken as already holding the whole global batch.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def extract_features(feature_fn: Callable, batches: Iterable[Mapping]):
    """Run `feature_fn` over eval batches -> (feats np.float32 [N, D], labels np.int32 [N]).

    batches yields {"image": global [B, ...], "label": [B], "mask": [B] bool} (mask optional,
    default all True); rows with mask False are padding and are dropped, so with a padded
    eval pipeline every real example appears exactly once, in batch order. feature_fn(images)
    -> [B, D]. Batch i+1 is dispatched before batch i is copied to the host so device compute
    overlaps the transfer. Multi-process: all processes get the same full result.
    """
    feats, labels = [], []
    pending = None

    def collect(item):
        out, label, mask = item
        out, label = _to_host(out), _to_host(label)
        mask = np.ones(label.shape[0], bool) if mask is None else _to_host(mask).astype(bool)
        if out.ndim != 2 or out.shape[0] != label.shape[0] or mask.shape != label.shape:
            raise ValueError(
                f"feature_fn must return [B, D] for a batch of B={label.shape[0]} examples; got "
                f"features {out.shape}, labels {label.shape}, mask {mask.shape}.")
        feats.append(out[mask].astype(np.float32))
        labels.append(label[mask].astype(np.int32))

    for batch in batches:
        current = (feature_fn(batch["image"]), batch["label"], batch.get("mask"))
        if pending is not None:
            collect(pending)
        pending = current
    if pending is None:
        raise ValueError("extract_features got no batches; check the eval dataset is not empty.")
    collect(pending)
    return np.concatenate(feats), np.concatenate(labels)


def knn_eval(feature_fn: Callable, train_batches: Iterable[Mapping],
             test_batches: Iterable[Mapping], num_classes: int, k: int = 200,
             temperature: float = 0.1, chunk_size: int = 1024) -> dict:
    """Trainer hook: features of both splits, then kNN accuracy.

    Returns {"knn_top1", ["knn_top5" if num_classes >= 5], "knn_num_train", "knn_num_test"};
    the counts let a log show that no example was dropped.
    """
    train_feats, train_labels = extract_features(feature_fn, train_batches)
    test_feats, test_labels = extract_features(feature_fn, test_batches)
    acc = knn_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes,
                       k=k, temperature=temperature, chunk_size=chunk_size)
    metrics = {f"knn_{name}": value for name, value in acc.items()}
    metrics["knn_num_train"] = int(train_feats.shape[0])
    metrics["knn_num_test"] = int(test_feats.shape[0])
    return metrics
