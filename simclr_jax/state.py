"""TrainState: everything that changes during training, in one pytree.

One state goes into the jitted step and one comes out; nothing is kept in Python between steps,
so checkpoint/resume is "save this pytree" and multi-device is "shard this pytree".
`method_state` is the method's own pytree (EMA target, queue, memory bank, centre, ...): the
trainer never looks inside it (see simclr_jax/methods/__init__.py).
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

# Top-level fields of checkpoints written before methods owned their state; they now live,
# under the same names, inside `method_state` (checkpoint.py migrates them on restore).
LEGACY_METHOD_FIELDS = ("target_params", "target_batch_stats", "queue", "queue_ptr",
                        "queue_filled")


@flax.struct.dataclass
class TrainState:
    step: jax.Array                # [] int32, optimizer steps taken
    params: Any                    # online network (backbone, projector, predictor, probe)
    batch_stats: Any               # online BN running statistics
    opt_state: Any
    rng: jax.Array                 # [2] uint32 base key; per-step keys are fold_in(rng, step)
    method_state: Any = None       # the method's own state ({} when it has none)

    def to_dict(self) -> dict:
        """Checkpointable view: plain dict of the array fields."""
        out = {k: v for k, v in vars(self).items() if v is not None}
        if not out.get("method_state"):   # an empty dict is no node for orbax
            out.pop("method_state", None)
        return out

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
