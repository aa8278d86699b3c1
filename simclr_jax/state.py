"""TrainState: everything that changes during training, in one pytree.

One state goes into the jitted step and one comes out; nothing is kept in Python between steps,
so checkpoint/resume is "save this pytree" and multi-device is "shard this pytree".
Fields a method does not use stay None (an empty pytree node).
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    step: jax.Array                # [] int32, optimizer steps taken
    params: Any                    # online network (backbone, projector, predictor, probe)
    batch_stats: Any               # online BN running statistics
    opt_state: Any
    rng: jax.Array                 # [2] uint32 base key; per-step keys are fold_in(rng, step)
    target_params: Any = None      # EMA ("momentum") encoder: MoCo, BYOL, SimCLR v2 option
    target_batch_stats: Any = None  # the target's own BN statistics (from its own passes)
    queue: Any = None              # [K, D] L2-normalised keys (MoCo v1/v2)
    queue_ptr: Any = None          # [] int32 next write position in the queue
    queue_filled: Any = None       # [] int32 number of real keys written (for the fill metric)

    def to_dict(self) -> dict:
        """Checkpointable view: plain dict of the array fields that are in use."""
        return {k: v for k, v in vars(self).items() if v is not None}

    def replace_from_dict(self, d: dict) -> "TrainState":
        return self.replace(**d)


def ema(target, online, momentum):
    """target <- m * target + (1 - m) * online, leaf by leaf (parameters only)."""
    return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def tree_all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def select_tree(pred, on_true, on_false):
    """Elementwise choice between two pytrees of the same structure (no host sync)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)
