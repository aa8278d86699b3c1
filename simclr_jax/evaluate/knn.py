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

from simclr_jax.losses import l2_normalize   # a zero vector stays zero

@functools.partial(jax.jit, static_argnames=("k", "num_classes", "top"))
def _knn_chunk(train_n, train_labels, test_chunk, temperature, *, k, num_classes, top):
    """Top-`top` classes by weighted vote for one fixed-size chunk of test rows.

    train_n [N, D] already L2-normalised, train_labels [N] int32, test_chunk [C, D] raw.
    Returns int32 [C, top]: classes sorted by descending score, ties -> lower class index.
    """
    test_n = l2_normalize(test_chunk.astype(jnp.float32))  # [C, D]
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
    train_n = l2_normalize(jnp.asarray(train_feats, jnp.float32))  # [N, D]
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


def nearest_neighbours(bank_feats: np.ndarray, test_feats: np.ndarray, k: int) -> np.ndarray:
    """int [T, k]: the bank rows most cosine-similar to each test row, most similar first."""
    bank_n, test_n = (np.asarray(l2_normalize(jnp.asarray(x, jnp.float32)))
                      for x in (bank_feats, test_feats))
    sim = test_n @ bank_n.T                                               # [T, N]
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def neighbours_grid(test_images: np.ndarray, test_labels: np.ndarray, bank_images: np.ndarray,
                    bank_labels: np.ndarray, border: int = 2) -> np.ndarray:
    """[1, T*(S+2b), (k+1)*(S+2b), 3] image in [0, 1]: each row a test image (grey frame), then
    its k neighbours in the bank framed green when their label matches, red when not.

    test_images [T, S, S, 3], bank_images [T, k, S, S, 3], labels [T] and [T, k].
    """
    def framed(image, colour):                       # [S, S, 3] -> [S+2b, S+2b, 3]
        size = image.shape[0] + 2 * border
        tile = np.empty((size, image.shape[1] + 2 * border, 3), np.float32)
        tile[:] = colour
        tile[border:size - border, border:-border] = image
        return tile

    rows = []
    for image, label, nbrs, nbr_labels in zip(test_images, test_labels, bank_images, bank_labels):
        tiles = [framed(image, (0.5, 0.5, 0.5))]
        tiles += [framed(n, (0.0, 0.8, 0.0) if y == label else (0.9, 0.0, 0.0))
                  for n, y in zip(nbrs, nbr_labels)]
        rows.append(np.concatenate(tiles, axis=1))
    return np.clip(np.concatenate(rows, axis=0), 0.0, 1.0)[None].astype(np.float32)


def make_feature_fn(network, mesh):
    """Backbone (or projector: the network's `encode`) features in inference mode (BN running
    statistics), jitted over the mesh: (params, batch_stats, images [B, S, S, 3]) -> [B, F]."""
    from simclr_jax import parallel

    replicated, rows = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)

    @functools.partial(jax.jit, in_shardings=(replicated, replicated, rows), out_shardings=rows)
    def features(params, batch_stats, images):
        return network.apply({"params": params, "batch_stats": batch_stats}, images,
                             method="encode")
    return features


def make_bn_update_fn(network, mesh):
    """One train-mode pass of the encoder (batch statistics, as a training step normalises):
    (params, batch_stats, images [B, S, S, 3]) -> the running statistics it writes, jitted over
    the mesh (the batch is global, so they are global-batch statistics)."""
    from simclr_jax import parallel

    replicated, rows = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)

    @functools.partial(jax.jit, in_shardings=(replicated, replicated, rows),
                       out_shardings=replicated)
    def update(params, batch_stats, images):
        _, variables = network.apply({"params": params, "batch_stats": batch_stats}, images,
                                     train=True, method="encode", mutable=["batch_stats"])
        return variables["batch_stats"]
    return update


def mean_batch_statistics(update, params, batch_stats, batches: Iterable[Mapping],
                          max_batches: int):
    """`batch_stats` replaced by the mean over up to `max_batches` whole batches of the
    statistics each batch has in train mode ("precise BN"); `batch_stats` itself when it is
    empty (no BN) or no batch is given.

    Every BN layer updates `ra = m * ra + (1 - m) * stat`, linear in `ra`: from ra = 0 the
    update is (1 - m) * stat, from ra = 1 it is m + (1 - m) * stat, so the difference gives m
    (whatever momentum each layer has) and stat follows. A batch with padded rows (the last
    one, whose padding repeats its last example) counts only when no whole batch exists."""
    if not jax.tree.leaves(batch_stats) or max_batches < 1:
        return batch_stats
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    momentum, total, count = None, None, 0
    for batch in batches:
        mask = batch.get("mask")
        whole = mask is None or bool(_to_host(mask).all())
        if not whole and count:
            break
        from_zero = update(params, zeros, batch["image"])          # (1 - m) * stat per leaf
        if momentum is None:
            from_one = update(params, jax.tree.map(jnp.ones_like, batch_stats), batch["image"])
            momentum = jax.tree.map(lambda a, b: b - a, from_zero, from_one)
        total = from_zero if total is None else jax.tree.map(jnp.add, total, from_zero)
        count += 1
        if count == max_batches or not whole:
            break
    if total is None:
        return batch_stats
    return jax.tree.map(lambda t, m: t / (count * (1.0 - m)), total, momentum)


class KnnEvaluator:
    """Weighted kNN (InstDisc) of an encoder's features: `bank` examples vote for `test` ones.

    The same object monitors pretraining (every eval.every_steps) and runs the standalone kNN
    mode. After each call, `neighbours_image()` shows a few test images with their nearest
    bank images (random-access sources only; streamed ones have no index to show).
    """

    def __init__(self, network, mesh, *, bank, test, image_size: int, batch_size: int,
                 k: int, temperature: float, normalize: str = "none", num_shown: int = 8,
                 neighbours_shown: int = 7, on_device: bool = False):
        from simclr_jax.errors import UserError
        if not bank.num_classes:
            raise UserError(f"kNN evaluation needs labels but {bank.name}:{bank.split} has none; "
                            f"set --config.dataset.knn_train_split='' to disable it.")
        self.bank, self.test, self.mesh = bank, test, mesh
        self.image_size, self.batch_size, self.normalize = image_size, batch_size, normalize
        self.k, self.temperature = k, temperature
        self.num_shown, self.neighbours_shown = num_shown, neighbours_shown
        # Decoded in-memory splits are viewed in JAX with dataset.on_device or without TF.
        from simclr_jax.data import tf_support
        self.jax_views = all(s.storage == "array" for s in (bank, test)) and (
            on_device or not tf_support.available())
        self.features = make_feature_fn(network, mesh)
        self.bn_update = make_bn_update_fn(network, mesh)
        self._shown = None          # (test indices [T], bank indices [T, k]) of the last call

    def _batches(self, source):
        if self.jax_views:
            from simclr_jax.data import device_dataset as pipeline
        else:
            from simclr_jax.data import pipeline
        return pipeline.eval_batches(source, global_batch_size=self.batch_size,
                                     image_size=self.image_size, mesh=self.mesh,
                                     normalize=self.normalize)

    def _extract(self, source, params, batch_stats):
        return extract_features(lambda images: self.features(params, batch_stats, images),
                                self._batches(source))

    def bank_batch_statistics(self, params, batch_stats, max_batches: int):
        """`batch_stats` re-estimated on the bank's first `max_batches` batches (see
        mean_batch_statistics). Why: a randomly initialised BN encoder holds running
        statistics (0, 1), i.e. no normalisation at all, which is not the network a step
        trains; scored with the statistics of real images it is the baseline that learning
        must beat."""
        return mean_batch_statistics(self.bn_update, params, batch_stats,
                                     self._batches(self.bank), max_batches)

    def __call__(self, params, batch_stats) -> dict:
        bank_x, bank_y = self._extract(self.bank, params, batch_stats)
        test_x, test_y = self._extract(self.test, params, batch_stats)
        acc = knn_accuracy(bank_x, bank_y, test_x, test_y, num_classes=self.bank.num_classes,
                           k=self.k, temperature=self.temperature)
        if self.bank.random_access and self.test.random_access:
            shown = np.linspace(0, len(test_x) - 1, min(self.num_shown, len(test_x))).astype(int)
            self._shown = (shown, nearest_neighbours(
                bank_x, test_x[shown], min(self.neighbours_shown, len(bank_x))))
        return {f"knn_{name}": float(value) for name, value in acc.items()}

    def neighbours_image(self) -> np.ndarray | None:
        """[1, H, W, 3] grid of the last call's test images and their neighbours, or None."""
        if self._shown is None:
            return None
        shown, nbrs = self._shown
        images = _eval_images
        if self.jax_views:
            from simclr_jax.data.device_dataset import eval_images as images
        test_images = images(self.test, shown, self.image_size)
        bank_images = images(self.bank, nbrs.reshape(-1), self.image_size)
        bank_images = bank_images.reshape(*nbrs.shape, *bank_images.shape[1:])
        return neighbours_grid(test_images, self.test.labels[shown], bank_images,
                               self.bank.labels[nbrs])


def _eval_images(source, indices: np.ndarray, image_size: int) -> np.ndarray:
    """float [n, S, S, 3] in [0, 1]: examples `indices` of a random-access source, as the
    evaluation sees them before normalisation."""
    from simclr_jax.data import augment_tf
    crop = 1.0 if image_size <= 32 else 0.875
    return np.stack([augment_tf.eval_view(source.read(source.images[i]), image_size, crop).numpy()
                     for i in indices])
