"""`dataset.on_device`: the whole training split lives on the devices; every step's examples
and views are made inside the jitted train step, with no host pipeline and no TensorFlow.

For random-access sources of one image size that fit in device memory (the digits, CIFAR-size
TFDS splits, npz archives, folders of equal-size images). Why: on an accelerator a tf.data host
feeds a few thousand views/s per core, while the step wants tens of thousands; and the hosts we
are lent have no TensorFlow at all.

- Placement: images uint8 [N, H, W, 3] and labels int32 [N] are REPLICATED on every device, once.
  Each device then gathers its own rows of the batch locally; a sharded copy would need an
  all-to-all of the batch's images every step. Replication costs N*H*W*3 bytes per device:
  154 MB for CIFAR-10, 2.8 GB for STL-10's unlabelled split; `MAX_DEVICE_BYTES` bounds it.
- Order: global element g = step * B + row is example perm_e[g % n] of epoch e = g // n, where
  perm_e is jax.random.permutation keyed by (seed, e): every example once per epoch, batches
  may straddle two epochs. The same scheme as the host pipeline but JAX's PRNG instead of TF's
  index_shuffle, so the two paths visit the examples in different orders.
- Views: row r's draws (`draw_slots` layout) are row r of one uniform [B, V, NUM_DRAWS] draw
  keyed by (seed, step); `augment_jax.view_from_draws` turns them into the view. A pure function
  of (seed, step, row): the same on any topology, and a resumed run recomputes the same views.
- The rows are constrained to the mesh's data axis, so each device gathers and augments only
  its own shard of the batch.

The train step receives {"dataset": DeviceData} and `make_views` turns it into the batch every
method reads: {"view1".."viewK": float32 [B, S_k, S_k, 3], "label": int32 [B], "index": int32
[B]} (index: the example's position in the training split).
"""
from __future__ import annotations

import itertools
import math
from typing import Iterator

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax import parallel
from simclr_jax.data import aug_presets, augment_jax, draw_slots
from simclr_jax.errors import UserError

MAX_DEVICE_BYTES = 16 << 30      # replicated pixels per device (an H200 holds 141 GB)
_ORDER_STREAM, _VIEW_STREAM = 1, 2   # fold_in tags: example order, view draws


def view_size(config, name: str) -> int:
    """Side of view `name` (e.g. "view2"): its own `aug.<name>.image_size` if set, else
    dataset.image_size. The one place a per-view size is read."""
    return int(config.aug[name].get("image_size") or config.dataset.image_size)


@flax.struct.dataclass
class DeviceData:
    """The training split on the devices (replicated); `mesh` is static (part of the step's
    compiled signature), so `make_views` can pin its rows to the mesh's data axis."""
    images: jax.Array        # uint8 [N, H, W, 3]
    labels: jax.Array        # int32 [N]
    mesh: Mesh = flax.struct.field(pytree_node=False)


def check_source(source) -> None:
    """One clear line when a split cannot live on the devices."""
    if source.storage != "array" or source.images is None:
        raise UserError(
            f"dataset.on_device needs a split decoded into memory with one image size; "
            f"{source.name}:{source.split} is stored as {source.storage!r} (images of several "
            f"sizes, or too large). Use --config.dataset.on_device=false (the tf.data pipeline).")
    size = source.images.nbytes
    if size > MAX_DEVICE_BYTES:
        raise UserError(
            f"{source.name}:{source.split} is {size / 2**30:.1f} GiB of pixels, more than the "
            f"{MAX_DEVICE_BYTES / 2**30:.0f} GiB dataset.on_device replicates on each device; use "
            f"--config.dataset.on_device=false.")


def put(source, mesh: Mesh) -> DeviceData:
    """Copy a random-access split's pixels and labels to every device of the mesh, once.
    Every process holds the same numpy arrays (multi-host safe)."""
    check_source(source)
    sharding = parallel.replicated_sharding(mesh)

    def replicated(x):
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    labels = np.asarray(source.labels, np.int32)
    return DeviceData(images=replicated(np.ascontiguousarray(source.images)),
                      labels=replicated(labels), mesh=mesh)


def batches(source, mesh: Mesh) -> Iterator[dict]:
    """The train loop's batches: the same {"dataset": DeviceData} every step (the step itself
    picks the examples from its step counter), so nothing moves from the host per step."""
    return itertools.repeat({"dataset": put(source, mesh)})


def _rows(x, mesh: Mesh):
    """Pin the leading (batch) axis to the mesh's data axis inside the step."""
    spec = P(parallel.DATA_AXIS, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def example_indices(seed: int, step, batch_size: int, n: int):
    """int32 [B]: the training-split positions of global batch `step` (see the module doc).
    Requires batch_size <= n (a batch straddles at most two epochs)."""
    g = step * batch_size + jnp.arange(batch_size, dtype=jnp.int32)               # [B]
    epoch0 = (step * batch_size) // n
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _ORDER_STREAM)
    perm0, perm1 = (jax.random.permutation(jax.random.fold_in(key, epoch0 + i), n)
                    for i in (0, 1))                                                # [n] each
    pos = g % n
    return jnp.where(g // n == epoch0, perm0[pos], perm1[pos]).astype(jnp.int32)


def view_draws(seed: int, step, batch_size: int, num_views: int):
    """float32 [B, V, NUM_DRAWS] uniforms of global batch `step`: row r is example r's."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), _VIEW_STREAM), step)
    return jax.random.uniform(key, (batch_size, num_views, draw_slots.NUM_DRAWS), jnp.float32)


def make_views(batch: dict, config, step) -> dict:
    """Inside the jitted step: {"dataset": DeviceData} -> {"view1".."viewK", "label", "index"}
    for global batch `step` (int32 scalar)."""
    data: DeviceData = batch["dataset"]
    names = aug_presets.view_names(config.aug)
    n, batch_size = data.images.shape[0], config.batch_size
    index = _rows(example_indices(config.seed, step, batch_size, n), data.mesh)     # [B]
    images = data.images[index]                                                  # [B, H, W, 3]
    draws = _rows(view_draws(config.seed, step, batch_size, len(names)), data.mesh)
    out = {"label": data.labels[index], "index": index}
    for k, name in enumerate(names):
        cfg, size = config.aug[name], view_size(config, name)
        views = jax.vmap(lambda im, u: augment_jax.view_from_draws(im, u, cfg, size))(
            images, draws[:, k])                                                 # [B, S, S, 3]
        out[name] = _rows(jax.lax.stop_gradient(views), data.mesh)
    return out


# ----------------------------------------------------------------------------- evaluation

def eval_batches(source, *, global_batch_size: int, image_size: int, mesh: Mesh,
                 normalize: str = "none", crop_fraction: float | None = None
                 ) -> Iterator[dict]:
    """`pipeline.eval_batches` for decoded in-memory splits, without TensorFlow: global batch k
    = examples [k * B, (k + 1) * B) in split order, padded rows masked (label -1); the view is
    `augment_jax.eval_view` (the same centre crop and resize as the host's `eval_view`)."""
    parallel.check_batch_divisible(global_batch_size, mesh, "eval.batch_size")
    check_source(source)
    if crop_fraction is None:
        crop_fraction = 1.0 if image_size <= 32 else 0.875
    pi, pc = jax.process_index(), jax.process_count()
    local = global_batch_size // pc
    n = source.num_examples
    view = _jitted_eval_view(mesh, image_size, float(crop_fraction), normalize)
    for k in range(math.ceil(n / global_batch_size)):
        pos = k * global_batch_size + pi * local + np.arange(local)                 # [b]
        mask = pos < n
        rows = np.minimum(pos, n - 1)
        local_batch = {"image": source.images[rows],
                       "label": np.where(mask, source.labels[rows], -1).astype(np.int32),
                       "mask": mask}
        batch = parallel.to_global(mesh, local_batch)
        yield {**batch, "image": view(batch["image"])}


_EVAL_VIEWS: dict = {}


def _jitted_eval_view(mesh, size: int, crop_fraction: float, normalize: str):
    key = (mesh, size, crop_fraction, normalize)
    if key not in _EVAL_VIEWS:
        rows = parallel.batch_sharding(mesh)
        _EVAL_VIEWS[key] = jax.jit(jax.vmap(
            lambda im: augment_jax.eval_view(im, size, crop_fraction, normalize)),
            in_shardings=rows, out_shardings=rows)
    return _EVAL_VIEWS[key]


def eval_images(source, indices: np.ndarray, image_size: int) -> np.ndarray:
    """float [n, S, S, 3] in [0, 1]: examples `indices` as the evaluation sees them before
    normalisation (the kNN neighbour grid), without TensorFlow."""
    crop = 1.0 if image_size <= 32 else 0.875
    view = jax.jit(jax.vmap(lambda im: augment_jax.eval_view(im, image_size, crop)))
    return np.asarray(view(jnp.asarray(source.images[np.asarray(indices)])))
