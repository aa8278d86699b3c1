"""One stop step for every process: SIGTERM (preemption), Ctrl-C or a step limit -> save and exit.

Single process: a SIGTERM / SIGINT handler sets a flag, read at the next step boundary.
Several processes (jax.distributed joined): JAX's preemption sync manager owns SIGTERM. When any
process receives it, the coordination service propagates the notice and every process agrees
on the same sync step (the largest step any of them has reached, plus one);
`multihost_utils.reached_preemption_sync_point` turns True there on all of them, so they all save
that step together and no collective save can hang on a process that already left. A first
Ctrl-C (SIGINT) is turned into a SIGTERM to this process, so it takes the same agreed path.
A second Ctrl-C aborts at once (status 130), like kill -9: checkpoints are written atomically,
so the last complete one stays good.
"""
from __future__ import annotations

import os
import signal
import sys

from absl import logging

from jax._src import distributed as _jax_distributed
from jax.experimental import multihost_utils

# Exit status of a run that stopped before its last step with a checkpoint saved: re-running the
# same command resumes. Chosen apart from 0 (finished), 1 (crash) and 2 (usage error), so a
# scheduler can requeue on it.
EXIT_STOPPED = 3
# Exit status of an interrupted run (a second Ctrl-C, or Ctrl-C outside the training loop): the
# shell's convention for SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


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
        self._interrupted = False
        self._previous = {}
        self._synced = _sync_manager_active()
        handled = (signal.SIGINT,) if self._synced else (signal.SIGTERM, signal.SIGINT)
        for signum in handled:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not in the main thread
                pass

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            if self._interrupted:
                print("error: interrupted twice: aborted without saving this step; the last "
                      "complete checkpoint is kept: re-run the same command to resume from it.",
                      file=sys.stderr, flush=True)
                os._exit(EXIT_INTERRUPTED)
            self._interrupted = True
            print("Interrupted: checkpointing and stopping at the next step (press Ctrl-C again "
                  "to abort without saving).", file=sys.stderr, flush=True)
            if self._synced:   # the preemption sync manager makes every process agree on a step
                os.kill(os.getpid(), signal.SIGTERM)
                return
        else:
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
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = {}


def exit_now(status: int) -> None:
    """End the process at once, once everything is durable (checkpoint committed, files written).

    The interpreter's own teardown (garbage-collecting ~500k objects whose finalizers destroy
    XLA executables, MLIR contexts and TensorFlow's runtime) took 3-8 s on an idle 2-core CPU and
    15-30 s on a loaded one, more than a preemption grace period. Several processes first leave
    the cluster together (jax.distributed.shutdown is a barrier), so no peer sees a lost
    coordinator.
    """
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if _jax_distributed.global_state.client is not None:
            _jax_distributed.shutdown()
    finally:
        os._exit(status)
