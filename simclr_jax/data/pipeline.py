"""tf.data input pipelines producing GLOBAL jax.Arrays sharded over the mesh's "data" axis.

Topology independence: the global batch of step k is a function of (seed, k) alone. Element g
of the GLOBAL stream (g = k * global_batch + row) is example `index_shuffle(g % n)` of the
permutation of ALL n examples keyed by (seed, g // n), augmented with row `row` of the step's
draws (one stateless op per step draws every view's uniforms for the whole global batch).
Process p of P materialises only its rows [p * B/P, (p + 1) * B/P) of each global batch, so
2 processes x 2 devices, 1 x 4 and 1 x 1 see the same images in the same order.

Per core speed (BENCHMARKS.md): per-example work is only what must be per example (decode once
for all views, crop, resize, flip, and the colour ops on the host path); the random numbers and
the epoch permutation are computed once per batch.

Starting at `start_step` starts the counter there: no record is read, decoded or augmented for
the skipped steps, so a resumed run (on any topology) sees exactly the batches of an
uninterrupted one.

Random-access records live in TF resource variables and are gathered inside the graph (no
Python callback: a callback needing the GIL while an iterator is destroyed hung the interpreter
at exit on one core).

Streamed (large TFDS) sources cannot be permuted globally: each process reads its own shards
with a per-process shuffle, so WHICH examples form a batch depends on the process count (the
augmentation seeds still follow the global index). They skip whole epochs for free on resume
and read, without decoding, less than one epoch of records.
"""
from __future__ import annotations

import collections
import functools
import itertools
import math
import weakref
from typing import Iterator, Optional

import jax
import numpy as np

from simclr_jax import parallel
from simclr_jax.data import tf_support

tf = tf_support.tensorflow("the tf.data input pipeline (dataset.on_device=false)")  # one error line where TF is missing

from simclr_jax.data import aug_presets, augment_tf, sources  # noqa: E402
from simclr_jax.errors import UserError

_NO_END = 2 ** 62                # the element counter of an "infinite" stream
DEFAULT_SHUFFLE_BUFFER = 10_000  # streamed sources: record shuffle buffer (encoded bytes)


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return options


def _device_prefetch(batches, mesh, size: int = 2) -> Iterator[dict]:
    """numpy local batches -> global jax.Arrays, transferring `size` batches ahead."""
    queue = collections.deque()
    for batch in batches:
        queue.append(parallel.to_global(mesh, batch))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _global_index(j, local_batch: int, global_batch: int, process_index: int):
    """This process's j-th element -> its index in the global stream: row
    process_index * local_batch + j % local_batch of global batch j // local_batch."""
    return j // local_batch * global_batch + process_index * local_batch + j % local_batch


def _draws(seed: int, g, global_batch: int, num_views: int):
    """The augmentation draws of global elements g (int64 [b], all of one step): float32
    [b, num_views, NUM_DRAWS]. One stateless op draws the whole global batch of the step and
    each element takes its row, so a view depends on (seed, step, row) only."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 1], tf.int64),
                                                   g[0] // global_batch)
    table = tf.random.stateless_uniform([global_batch, num_views, augment_tf.NUM_DRAWS], key)
    return tf.gather(table, g % global_batch)


def _example_fn(source: sources.Source, view_cfgs, image_sizes: list, host_only: bool):
    """(record, label, draws [V, NUM_DRAWS], index) -> {"view1": ..., "label", "index"}:
    decode the record once, then crop, resize and flip each view (view k to image_sizes[k]),
    and apply its colour ops unless `host_only` (then the views are uint8 and augment_jax
    finishes them on the device)."""
    @tf.autograph.experimental.do_not_convert  # plain graph code (tf.cond where needed)
    def make(record, label, draws, index):
        views = augment_tf.augment_views(source.read(record), view_cfgs, image_sizes, draws,
                                         host_only)
        out = {f"view{k + 1}": view for k, view in enumerate(views)}
        out["label"] = label
        out["index"] = index
        return out

    return make


class _InMemoryRecords:
    """A random-access source's records and labels in TF resource variables, gathered with
    tf.gather inside the tf.data graph: no Python callback (destroying an iterator never waits
    for the GIL) and no copy of the dataset into the graph as a constant."""

    def __init__(self, source: sources.Source):
        dtype = tf.uint8 if source.storage == "array" else tf.string
        with tf.device("/CPU:0"):
            self.records = tf.Variable(source.images, dtype=dtype, trainable=False)
            self.labels = tf.Variable(source.labels.astype(np.int32), trainable=False)

    def gather(self, positions):  # int64 [b] -> (records [b, ...], int32 labels [b])
        return tf.gather(self.records, positions), tf.gather(self.labels, positions)


_RECORDS: "weakref.WeakKeyDictionary[sources.Source, _InMemoryRecords]" = (
    weakref.WeakKeyDictionary())


def _records(source: sources.Source) -> _InMemoryRecords:
    """One TF copy of a source's records, shared by every pipeline over it (kNN evaluations
    rebuild their pipelines often) and freed with the source."""
    if source not in _RECORDS:
        _RECORDS[source] = _InMemoryRecords(source)
    return _RECORDS[source]


def _view_configs(aug_cfg, num_views: Optional[int]) -> list:
    """aug.view1..viewV (every configured view when num_views is None)."""
    if num_views is None:
        num_views = len(aug_presets.view_names(aug_cfg))
    if num_views < 1:
        raise UserError("the aug config has no view: add aug.view1 (aug_presets.two_views or "
                        "the method's config file builds them).")
    cfgs = []
    for k in range(1, num_views + 1):
        if f"view{k}" not in aug_cfg:
            raise UserError(f"the aug config has no 'view{k}' (views must be numbered view1, "
                            f"view2, ... without gaps).")
        cfgs.append(aug_cfg[f"view{k}"])
    return cfgs


def view_sizes(view_cfgs, image_size: int) -> list:
    """Each view's output size: its own `image_size` when set, else the dataset's."""
    return [int(cfg.get("image_size") or image_size) for cfg in view_cfgs]


def pretrain_batches(source: sources.Source, aug_cfg, *, global_batch_size: int,
                     image_size: int, seed: int, start_step: int = 0, mesh,
                     num_views: Optional[int] = None,
                     shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> Iterator[dict]:
    """Infinite iterator of {"view1".."viewV": f32 [B, S_v, S_v, 3], "label": int32 [B],
    "index": int32 [B]} global arrays; view v is drawn with aug_cfg.view{v} at its own size
    (aug_cfg.view{v}.image_size, default `image_size`); V = every configured view unless
    num_views is given. "index" is the example's position in the split (-1 on streamed
    sources). Deterministic given (seed, start_step).
    With aug_cfg.on_device the views are uint8, only cropped, resized and flipped: the train
    step finishes them with `augment_jax.augment_batch`."""
    parallel.check_batch_divisible(global_batch_size, mesh)
    batches = local_pretrain_batches(
        source, aug_cfg, global_batch_size=global_batch_size, image_size=image_size, seed=seed,
        start_step=start_step, num_views=num_views, process_index=jax.process_index(),
        process_count=jax.process_count(), shuffle_buffer=shuffle_buffer)
    return _device_prefetch(batches, mesh)


def local_pretrain_batches(source: sources.Source, aug_cfg, *, global_batch_size: int,
                           image_size: int, seed: int, start_step: int = 0,
                           num_views: Optional[int] = None,
                           process_index: int = 0, process_count: int = 1,
                           shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> Iterator[dict]:
    """Process `process_index` of `process_count`'s rows of every global batch, as numpy."""
    if source.num_examples < global_batch_size:
        raise UserError(f"{source.name}:{source.split} has {source.num_examples} examples, "
                        f"fewer than one global batch of {global_batch_size}; lower the batch "
                        f"size.")
    view_cfgs = _view_configs(aug_cfg, num_views)
    num_views = len(view_cfgs)
    pi, pc = process_index, process_count
    local_batch = global_batch_size // pc
    to_global = functools.partial(_global_index, local_batch=local_batch,
                                  global_batch=global_batch_size, process_index=pi)
    draws = functools.partial(_draws, seed, global_batch=global_batch_size,
                              num_views=num_views)
    make = _example_fn(source, view_cfgs, view_sizes(view_cfgs, image_size),
                       bool(aug_cfg.get("on_device")))
    if source.random_access:
        return _random_access_pretrain(source, make, draws, local_batch, seed, int(start_step),
                                       to_global)
    return _streamed_pretrain(source, make, draws, local_batch, seed,
                              int(start_step) * local_batch, pi, pc, to_global, shuffle_buffer)


def _augmented(ds, make, local_batch: int):
    """Batches of (records, labels, draws, indices) -> per-example views (parallel) -> numpy
    batches."""
    ds = ds.unbatch().map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options()).as_numpy_iterator()


def _random_access_pretrain(source, make, draws, local_batch, seed, start_step, to_global):
    """Global element g = example index_shuffle(g % n) of epoch g // n's permutation of all n
    examples (batches may straddle two epochs); this process reads only its own rows."""
    n = source.num_examples
    records = _records(source)
    epoch_key = tf.constant([seed, 0], tf.int64)

    def plan(step):  # -> this process's (records, labels, draws, indices) of batch `step`
        g = to_global(step * local_batch + tf.range(local_batch, dtype=tf.int64))   # [b]
        epoch = g // n        # a global batch holds at most n examples: two epochs at most
        shuffled = [tf.random.experimental.index_shuffle(
            g % n, tf.random.experimental.stateless_fold_in(epoch_key, epoch[0] + i), n - 1)
            for i in (0, 1)]
        positions = tf.where(epoch == epoch[0], *shuffled)                          # [b]
        recs, labels = records.gather(positions)
        return recs, labels, draws(g), tf.cast(positions, tf.int32)

    return _augmented(tf.data.Dataset.range(start_step, _NO_END).map(plan), make, local_batch)


def _epoch_seed(seed: int, epoch: int, process_index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, process_index]).generate_state(1)[0])


def _streamed_pretrain(source, make, draws, local_batch, seed, start, pi, pc, to_global,
                       shuffle_buffer):
    """One tf.data pipeline per epoch, files and records shuffled with the epoch's seed.

    An epoch is n_eff = (this process's examples rounded down to whole local batches), so
    epochs and batches align: a resumed run starts at epoch start // n_eff, skipping
    start % n_eff raw records of it. The < local_batch examples left out of an epoch are random
    (cut after the shuffle) and differ between epochs.
    """
    n_local = min(source.stream_sizes(pc))
    n_eff = n_local // local_batch * local_batch
    if n_eff == 0:
        raise UserError(f"each of the {pc} processes holds {n_local} examples, fewer than its "
                         f"local batch of {local_batch}; lower the batch size.")
    epoch0, offset = divmod(start, n_eff)
    make = tf.function(make, autograph=False)  # traced once, reused by every epoch
    for epoch in itertools.count(epoch0):
        eseed = _epoch_seed(seed, epoch, pi)
        ds = source.stream(pi, pc, eseed).take(n_local)
        ds = ds.shuffle(min(shuffle_buffer, n_local), seed=eseed, reshuffle_each_iteration=False)
        ds = ds.take(n_eff).enumerate(start=epoch * n_eff)
        if epoch == epoch0 and offset:
            ds = ds.skip(offset)  # raw records only: nothing decoded or augmented
        ds = ds.batch(local_batch, drop_remainder=True).map(
            lambda j, ex: (ex["image"], ex["label"], draws(to_global(j)),
                           tf.fill([tf.shape(j)[0]], -1)))   # no index on a stream
        yield from _augmented(ds, make, local_batch)


def eval_batches(source: sources.Source, *, global_batch_size: int, image_size: int, mesh,
                 normalize: str = "none", crop_fraction: Optional[float] = None
                 ) -> Iterator[dict]:
    """One deterministic pass: {"image": f32 [B, S, S, 3], "label": int32 [B], "mask": bool [B]}.

    Every example appears exactly once with mask True; the last batches are padded (mask False,
    label -1). Centre crop of `crop_fraction` of the short side (default: 1.0 up to 32 px, else
    SimCLR's 0.875), resize, then `normalize` ("none" | "imagenet": match the training views).
    """
    parallel.check_batch_divisible(global_batch_size, mesh, "eval.batch_size")
    if crop_fraction is None:
        crop_fraction = 1.0 if image_size <= 32 else 0.875
    pi, pc = jax.process_index(), jax.process_count()
    local_batch = global_batch_size // pc

    def view(image):
        return augment_tf.eval_view(image, image_size, crop_fraction, normalize)

    if source.random_access:
        # Global batch k = examples [k * B, (k + 1) * B) in dataset order, whatever the topology.
        n = source.num_examples
        steps = math.ceil(n / global_batch_size)
        records = _records(source)

        def gather_batch(j):
            pos = _global_index(j, local_batch, global_batch_size, pi)
            recs, labels = records.gather(tf.minimum(pos, n - 1))
            return recs, labels, pos < n

        def one(rec, label, mask):
            return {"image": view(source.read(rec)), "label": tf.where(mask, label, -1),
                    "mask": mask}

        ds = tf.data.Dataset.range(steps * local_batch).batch(local_batch)
        ds = ds.map(gather_batch).unbatch()
    else:
        sizes = source.stream_sizes(pc)
        steps = math.ceil(max(sizes) / local_batch)
        pad = steps * local_batch - sizes[pi]
        ds = source.stream(pi, pc, None).map(lambda ex: (ex["image"], ex["label"], True))
        padding = tf.data.Dataset.range(pad).map(
            lambda _: (tf.constant(b"", tf.string), tf.constant(-1, tf.int32), False))
        ds = ds.concatenate(padding)

        def one(rec, label, mask):
            image = tf.cond(mask, lambda: source.read(rec),
                            lambda: tf.zeros([image_size, image_size, 3], tf.uint8))
            return {"image": view(image), "label": label, "mask": mask}

    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return _device_prefetch(ds.with_options(_options()).as_numpy_iterator(), mesh)
