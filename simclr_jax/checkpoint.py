"""Orbax checkpoints of the whole TrainState: save every N steps, resume from the latest.

Checkpoints hold arrays only (no pickles); the structure comes from a freshly built template
state, so a checkpoint restores with the template's shardings.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from simclr_jax.parallel import make_mesh, replicated
from simclr_jax.state import TrainState


def make_manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(manager: ocp.CheckpointManager, state: TrainState, *, wait: bool = False) -> None:
    step = int(jax.device_get(state.step))
    manager.save(step, args=ocp.args.StandardSave(state.to_dict()))
    if wait:
        manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, template: TrainState) -> TrainState | None:
    """The latest checkpoint restored into `template`'s structure/shardings, or None if none."""
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template.to_dict())
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return template.replace_from_dict(restored)


def restore_arrays(path: str, step: int | None = None) -> dict:
    """Raw restore of a checkpoint directory (workdir or workdir/checkpoints) as nested dicts.

    Used by evaluation/export, which only need params and batch_stats.
    """
    directory = os.path.abspath(path)
    if os.path.isdir(os.path.join(directory, "checkpoints")):
        directory = os.path.join(directory, "checkpoints")
    mgr = ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler())
    step = mgr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(
            f"no checkpoint found under {path!r}; pass a pretraining workdir (it contains "
            f"checkpoints/<step>/) or the checkpoints directory itself.")
    # Restore onto THIS process's devices (replicated), whatever mesh wrote the checkpoint:
    # pretrain on a pod slice, evaluate or export on one GPU or a laptop.
    metadata = mgr.item_metadata(step)
    tree = getattr(metadata, "tree", metadata)
    target = replicated(make_mesh())
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=target),
                            tree, is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
    return mgr.restore(step, args=ocp.args.StandardRestore(abstract))
