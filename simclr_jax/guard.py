"""Divergence guard: a state is saved only if the steps since the last save look like this run.

The rule, relative to the run's own history (config.guard.max_ratio = k, default 10):
at every metrics summary (each log and checkpoint step) the mean loss and the mean parameter
norm of the steps since the previous summary must be finite and at most k times the median of
the values accepted so far in this invocation. The parameter-norm history starts with the norm
of the state the invocation started from (the restored checkpoint or the initialisation), so an
explosion in the first interval is caught too. The loss is judged only once MIN_LOSS_HISTORY
summaries are accepted: early contrastive losses legitimately move by large factors (a MoCo queue
of random vectors that fills with real keys raises the loss from about ln(1 + K e^(-1/t)) to
ln(K + 1): ~30x for a 16-key test queue at t = 0.2), and one early value is no median. A summary that breaks the rule stops the run
before the next save: a diverging run never writes, so never rotates out, a good checkpoint.
k <= 0 turns the ratio rule off (the finiteness check stays).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from simclr_jax.errors import DivergedError, NonFiniteLossError

WATCHED = ("loss", "param_norm")
MIN_LOSS_HISTORY = 3


@dataclasses.dataclass
class DivergenceGuard:
    max_ratio: float
    checkpoint_dir: str
    last_good_step: Optional[int]           # newest checkpoint known good (None: none yet)
    accepted: dict = dataclasses.field(default_factory=lambda: {k: [] for k in WATCHED})

    @classmethod
    def start(cls, max_ratio: float, checkpoint_dir: str, restored_step: Optional[int],
              param_norm: float) -> "DivergenceGuard":
        guard = cls(max_ratio=float(max_ratio), checkpoint_dir=str(checkpoint_dir),
                    last_good_step=restored_step)
        guard.accepted["param_norm"].append(float(param_norm))
        return guard

    def _advice(self) -> str:
        if self.last_good_step is None:
            return ("No checkpoint was written yet: lower --config.optimizer.base_lr and re-run "
                    "(it starts from scratch).")
        return (f"The last good checkpoint is step {self.last_good_step} "
                f"({self.checkpoint_dir}/{self.last_good_step}): lower "
                f"--config.optimizer.base_lr (or check the data) and re-run the same command to "
                f"resume from it.")

    def check(self, summary: dict, first_step: int, last_step: int) -> None:
        """Raise if the summary of steps (first_step, last_step] is non-finite or exploding."""
        span = f"between steps {first_step} and {last_step}"
        if summary.get("nonfinite", 0) > 0 or not all(
                np.isfinite(summary[k]) for k in WATCHED if k in summary):
            raise NonFiniteLossError(
                f"non-finite loss or gradient {span}; those steps did not update the state and "
                f"nothing from them was saved. {self._advice()}")
        for key in WATCHED:
            history, value = self.accepted[key], summary.get(key)
            if value is None:
                continue
            if key == "loss" and len(history) < MIN_LOSS_HISTORY:
                continue
            median = float(np.median(history)) if history else 0.0
            if self.max_ratio > 0 and median > 0 and value > self.max_ratio * median:
                raise DivergedError(
                    f"training diverged {span}: {key} {value:.3g} is {value / median:.3g} x its "
                    f"running median {median:.3g} (limit: config.guard.max_ratio="
                    f"{self.max_ratio:g}); nothing from those steps was saved. {self._advice()}")
        for key in WATCHED:
            if key in summary:
                self.accepted[key].append(float(summary[key]))

    def saved(self, step: int) -> None:
        self.last_good_step = step
