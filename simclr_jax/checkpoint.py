"""Orbax checkpoints of the whole TrainState: save every N steps, resume from the newest intact one.

Checkpoints hold arrays only (no pickles); the structure comes from a freshly built template
state, so a checkpoint restores with the template's shardings. Paths go through etils.epath, so
a workdir may be gs://bucket/run.

A checkpoint that cannot be read (a truncated or missing file) is named in a warning, moved to
workdir/damaged_checkpoints/<step> (process 0) and the next older one is restored. A checkpoint
whose tree differs from what the config builds is a user mistake (changed model, method, heads
or queue size), not damage: it stops with one line instead of falling back.
"""
from __future__ import annotations

import dataclasses
import errno
import time
from typing import Callable, Optional

from absl import logging
import jax
import orbax.checkpoint as ocp

from simclr_jax.errors import UserError
from simclr_jax.parallel import make_mesh, replicated_sharding
from simclr_jax.state import LEGACY_METHOD_FIELDS, TrainState
from simclr_jax.workdir import as_path

DAMAGED = "damaged_checkpoints"


def make_manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
    if max_to_keep is not None and max_to_keep < 1:   # orbax would delete every checkpoint
        raise UserError(f"keep_checkpoints={max_to_keep} would keep no checkpoint, so the run "
                        f"could never resume; use 1 or more (default 3).")
    return ocp.CheckpointManager(
        as_path(workdir) / "checkpoints", item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


_FULL_MARKERS = ("No space left on device", "Disk quota exceeded")


@dataclasses.dataclass(frozen=True)
class Saving:
    """A save in flight, as `save` returns it: its step and size, for the disk-full message.
    The caller hands it back to the next `save` and to `wait_until_finished`, whose waits are
    where an asynchronous save's error surfaces."""
    step: int
    bytes: int


def disk_full(e: BaseException) -> bool:
    """Whether `e` (or an exception it wraps) says the device is full. Orbax and tensorstore
    wrap the OS error in their own types, so the text is checked as well as errno."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(e) for marker in _FULL_MARKERS):
            return True
        e = e.__cause__ or e.__context__
    return False


def _raise_if_disk_full(e: BaseException, manager: ocp.CheckpointManager,
                        saving: Optional[Saving]) -> None:
    if not disk_full(e):
        return
    step, size = (saving.step, saving.bytes) if saving else (None, None)
    directory = manager.directory
    try:
        manager.reload()
        good = [s for s in manager.all_steps() if s != step]
    except Exception:   # the listing is only for the message
        good = []
    last = (f"the last good checkpoint is step {max(good)} ({directory}/{max(good)})" if good
            else "no checkpoint was completed yet")
    needed = f", needing about {size / 2**20:.1f} MiB" if size else ""
    raise UserError(f"no space left on device while saving checkpoint {directory}/{step}"
                    f"{needed}; {last}. Free space and re-run the same command to resume.") from None


def save(manager: ocp.CheckpointManager, state: TrainState,
         previous: Optional[Saving] = None) -> Saving:
    """Start an asynchronous save of `state` at its step (the loop waits once, at its end);
    `previous` is what the last call returned (None for the first). Returns this save's
    `Saving`, for the next call and for `wait_until_finished`.

    A full disk (here or in the previous save, whose errors surface now) is one UserError
    naming the path, the size and the last good checkpoint."""
    step = int(jax.device_get(state.step))
    # orbax waits for the previous save anyway; its error is its own
    wait_until_finished(manager, previous)
    saving = Saving(step=step, bytes=sum(
        getattr(x, "nbytes", 0) for x in jax.tree.leaves(state.to_dict())))
    try:
        manager.save(step, args=ocp.args.StandardSave(state.to_dict()))
    except Exception as e:
        _raise_if_disk_full(e, manager, saving)
        raise
    return saving


def wait_until_finished(manager: ocp.CheckpointManager, saving: Optional[Saving] = None) -> None:
    """Wait for the save in flight (`saving`, as `save` returned it); a full disk is one
    UserError (see `save`)."""
    try:
        manager.wait_until_finished()
    except Exception as e:
        _raise_if_disk_full(e, manager, saving)
        raise


def _is_leaf_metadata(m) -> bool:
    return hasattr(m, "shape") and hasattr(m, "dtype")


def _tree_metadata(manager: ocp.CheckpointManager, step: int):
    metadata = manager.item_metadata(step)
    return getattr(metadata, "tree", metadata)


def _key_name(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _structure(tree, is_leaf=None) -> dict:
    """{"a/b/0": shape} of a pytree of arrays or of array metadata (tuples and dicts alike)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {"/".join(_key_name(k) for k in p): tuple(getattr(x, "shape", ())) for p, x in flat}


def _check_structure(stored, template, directory, step: int) -> None:
    have, want = _structure(stored, _is_leaf_metadata), _structure(template)
    differing = [p for p in sorted(set(have) | set(want)) if have.get(p) != want.get(p)]
    if differing:
        examples = "; ".join(f"{p}: checkpoint {have.get(p)} vs config {want.get(p)}"
                             for p in differing[:3])
        raise UserError(
            f"checkpoint {directory}/{step} does not fit the model this config builds "
            f"({len(differing)} arrays differ, e.g. {examples}): the model, method, heads or "
            f"queue size changed. Use a new --workdir for the new config.")


def _move_aside(manager: ocp.CheckpointManager, step: int) -> None:
    """Keep the unreadable checkpoint for inspection, out of the way of the next save."""
    source = as_path(manager.directory) / str(step)
    if jax.process_index() == 0 and source.exists():
        target = as_path(manager.directory).parent / DAMAGED
        target.mkdir(parents=True, exist_ok=True)
        destination = target / f"{step}.{int(time.time())}"
        source.rename(destination)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("simclr_jax_damaged_checkpoint")
    manager.reload()


def _restore_newest_intact(manager: ocp.CheckpointManager, restore_step: Callable,
                           move_damaged: bool):
    """(step, restore_step(step)) for the newest checkpoint that reads, or (None, None)."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return step, restore_step(step)
        except UserError:
            raise
        except Exception as e:  # orbax/tensorstore raise many types for a damaged file
            first_line = (str(e).strip().splitlines() or [""])[0].split(" See full")[0][:200]
            logging.warning("Checkpoint %s/%d cannot be read (%s: %s); falling back to the "
                            "previous one.", manager.directory, step, type(e).__name__,
                            first_line)
            if move_damaged:
                _move_aside(manager, step)
    return None, None


def _legacy_layout(target: dict, stored_keys) -> dict | None:
    """`target` in the layout of checkpoints written before methods owned their state (the
    method's fields at the top level), if the stored checkpoint has that layout; else None."""
    method_state = target.get("method_state") or {}
    if ("method_state" in stored_keys or not method_state
            or not set(method_state) <= set(LEGACY_METHOD_FIELDS)):
        return None
    return {**{k: v for k, v in target.items() if k != "method_state"}, **method_state}


def _from_legacy(restored: dict) -> dict:
    """A checkpoint of the old layout -> the current one (method fields into method_state)."""
    legacy = {k: restored.pop(k) for k in LEGACY_METHOD_FIELDS if k in restored}
    if legacy and "method_state" not in restored:
        restored["method_state"] = legacy
    return restored


def restore_latest(manager: ocp.CheckpointManager, template: TrainState) -> TrainState | None:
    """The newest intact checkpoint restored into `template`'s structure/shardings, or None.
    Checkpoints of the layout before method-owned state are migrated (same arrays, new place)."""
    target = template.to_dict()

    def restore_step(step):
        stored = _tree_metadata(manager, step)
        legacy = _legacy_layout(target, set(stored.keys()) if hasattr(stored, "keys") else ())
        want = target if legacy is None else legacy
        _check_structure(stored, want, manager.directory, step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, want)
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return restored if legacy is None else _from_legacy(dict(restored))

    step, restored = _restore_newest_intact(manager, restore_step, move_damaged=True)
    if restored is None:
        return None
    return template.replace_from_dict(restored)


def restore_arrays(path: str, step: Optional[int] = None) -> dict:
    """Raw restore of a checkpoint directory (workdir or workdir/checkpoints) as nested dicts.

    Used by evaluation/export, which only need params and batch_stats. Without `step`, the
    newest intact checkpoint (a damaged one is skipped with a warning, and left in place).
    """
    directory = as_path(path)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        raise UserError(f"{path} does not exist; pass a pretraining workdir (it contains "
                        f"checkpoints/<step>/) or the checkpoints directory itself.")
    mgr = ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler())
    # Restore onto THIS process's devices (replicated), whatever mesh wrote the checkpoint:
    # pretrain on a pod slice, evaluate or export on one GPU or a laptop.
    target = replicated_sharding(make_mesh())

    def restore_step(s):
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=target),
            _tree_metadata(mgr, s), is_leaf=_is_leaf_metadata)
        return mgr.restore(s, args=ocp.args.StandardRestore(abstract))

    if step is not None:
        if step not in mgr.all_steps():
            raise UserError(f"{path} has no checkpoint at step {step}; it has steps "
                            f"{sorted(mgr.all_steps())}.")
        return _from_legacy(dict(restore_step(step)))
    found, arrays = _restore_newest_intact(mgr, restore_step, move_damaged=False)
    if arrays is None and mgr.all_steps():
        raise UserError(f"none of the checkpoints under {path} can be read (see the warnings "
                        f"above); re-run the pretraining to write a new one.")
    if arrays is None:
        raise UserError(f"no checkpoint under {path}; pass a pretraining workdir (it contains "
                        f"checkpoints/<step>/) or the checkpoints directory itself.")
    return _from_legacy(dict(arrays))
