"""Compare a run of today's code with the digests the code before the method plug-in wrote
(tests/golden/*.json, commit a47d48a): per-step losses and EMA momenta, and per state field
the sum, the sum of absolute values and the size of all its leaves (float64)."""
import json
import os

import jax
import numpy as np

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
# Old TrainState field -> where it lives now.
FIELDS = {"params": ("params",), "batch_stats": ("batch_stats",)}
FIELDS.update({k: ("method_state", k) for k in ("target_params", "target_batch_stats", "queue",
                                                  "queue_ptr", "queue_filled")})


def load(name: str) -> dict:
    return json.load(open(os.path.join(GOLDEN_DIR, name)))


def digest(tree):
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
    return (sum(l.sum() for l in leaves), sum(np.abs(l).sum() for l in leaves),
            sum(l.size for l in leaves))


def assert_matches(ref: dict, state, losses, emas, updates_rtol: float = 1e-5) -> None:
    """`updates_rtol`: how far the losses after the first step and the state digests (relative
    to the sum of absolute values) may drift with the CPU's rounding; the first loss (the
    initial network's forward pass) is always held to 2e-5."""
    np.testing.assert_allclose(losses[:1], ref["loss"][:1], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(losses, ref["loss"], rtol=max(2e-5, updates_rtol), atol=1e-6)
    np.testing.assert_allclose(emas, ref["ema_momentum"], rtol=1e-7)
    state = jax.device_get(state)
    new_fields = {"params", "batch_stats"} | {f"method_state.{k}"
                                              for k in (state.method_state or {})}
    old_fields = {name if name in ("params", "batch_stats") else f"method_state.{name}"
                  for name in ref if name not in ("loss", "ema_momentum")}
    assert new_fields == old_fields           # the method state holds exactly the old fields
    for name, where in FIELDS.items():
        if name not in ref:
            continue
        value = state
        for part in where:
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        total, absolute, n = digest(value)
        assert n == ref[name]["n"], name
        np.testing.assert_allclose([total, absolute], [ref[name]["sum"], ref[name]["abs"]],
                                   rtol=1e-5, atol=max(1e-5, updates_rtol * ref[name]["abs"]),
                                   err_msg=name)
