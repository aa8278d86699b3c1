"""One stop step for every process: SIGTERM (preemption) or a step limit -> save and exit.

Single process: a SIGTERM handler sets a flag, read at the next step boundary.
Several processes (jax.distributed joined): JAX's preemption sync manager owns SIGTERM. When any
process receives it, the coordination service propagates the notice and every process agrees
on the same sync step (the largest step any of them has reached, plus one);
`multihost_utils.reached_preemption_sync_point` turns True there on all of them, so they all save
that step together and no collective save can hang on a process that already left.
"""
from __future__ import annotations

import signal

from absl import logging

from jax._src import distributed as _jax_distributed
from jax.experimental import multihost_utils

# Exit status of a run that stopped before its last step with a checkpoint saved: re-running the
# same command resumes. Chosen apart from 0 (finished), 1 (crash) and 2 (usage error), so a
# scheduler can requeue on it.
EXIT_STOPPED = 3


def _sync_manager_active() -> bool:
    state = _jax_distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


class StopSignal:
    """`should_stop(step)` is True at the same step on every process once a stop is requested.

    Call it once per step on every process with the number of steps done (all processes start
    from the same step: they restore the same checkpoint).
    """

    def __init__(self):
        self._requested = False
        self._previous = None
        self._synced = _sync_manager_active()
        if not self._synced:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not in the main thread
                pass

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: checkpointing and stopping at the next step.")
        self._requested = True

    def request(self) -> None:
        """A stop every process requests at the same step (e.g. a step limit)."""
        self._requested = True

    def should_stop(self, step: int) -> bool:
        if self._synced and multihost_utils.reached_preemption_sync_point(step):
            logging.warning("Preemption notice: all processes stop and save at step %d.", step)
            self._requested = True
        return self._requested

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
