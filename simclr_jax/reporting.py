"""Metric writers and progress hooks: clu's TensorBoard ones where clu imports, else plain logs.

clu's `metric_writers` import TensorFlow's summary writer at module level, so on a machine
without TensorFlow (the accelerator hosts we are lent) clu cannot be imported at all. There
the run still trains: scalars go to the log; images, hparams and the profiler are skipped.
Either way process 0 appends every scalar write to `<workdir>/metrics.jsonl` (one JSON object
per write: {"step": s, "name": value, ...}; local workdirs), which scripts read without
TensorBoard.
"""
from __future__ import annotations

import contextlib
import json
import os
import time

from absl import logging
import jax
import numpy as np


def clu_available() -> bool:
    try:
        from clu import metric_writers, periodic_actions  # noqa: F401
    except ImportError:
        return False
    return True


class JsonlWriter:
    """The subset of clu's MetricWriter the trainer uses, without TensorFlow."""

    def __init__(self, workdir: str, just_logging: bool):
        local = "://" not in str(workdir)          # appending to gs:// objects is not possible
        self.path = os.path.join(str(workdir), "metrics.jsonl") if local and not just_logging \
            else None

    def write_scalars(self, step: int, scalars: dict) -> None:
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
        if self.path and jax.process_index() == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": int(step), **values}) + "\n")

    def write_images(self, step: int, images: dict) -> None:
        del step, images

    def write_hparams(self, hparams: dict) -> None:
        del hparams

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _WithJsonl:
    """clu's writer, plus the scalars in metrics.jsonl."""

    def __init__(self, writer, jsonl: JsonlWriter):
        self._writer, self._jsonl = writer, jsonl

    def write_scalars(self, step: int, scalars: dict) -> None:
        self._writer.write_scalars(step, scalars)
        if self._jsonl.path and jax.process_index() == 0:
            values = {k: float(np.asarray(v)) for k, v in scalars.items()}
            with open(self._jsonl.path, "a") as f:
                f.write(json.dumps({"step": int(step), **values}) + "\n")

    def __getattr__(self, name):
        return getattr(self._writer, name)


def create_writer(workdir: str, just_logging: bool):
    jsonl = JsonlWriter(workdir, just_logging)
    if clu_available():
        from clu import metric_writers
        return _WithJsonl(metric_writers.create_default_writer(str(workdir),
                                                               just_logging=just_logging), jsonl)
    return jsonl


def parameter_overview(params) -> str:
    """clu's parameter table, or a count of parameters per top-level module without clu."""
    try:
        from clu import parameter_overview as overview
        return overview.get_parameter_overview(params)
    except ImportError:
        counts = {k: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v))
                  for k, v in params.items()}
        return "\n".join(f"{k}: {n:,} parameters" for k, n in counts.items())


class Progress:
    """clu's ReportProgress subset: steps/s in the log every `every_steps`, and `timed(name)`."""

    def __init__(self, num_train_steps: int, writer, every_steps: int):
        self.total, self.writer, self.every = num_train_steps, writer, every_steps
        self._t0, self._step0 = time.time(), None

    def __call__(self, step: int) -> None:
        if self._step0 is None:
            self._step0, self._t0 = step, time.time()
        elif step % self.every == 0 or step == self.total:
            rate = (step - self._step0) / max(time.time() - self._t0, 1e-9)
            logging.info("step %d/%d: %.2f steps/s", step, self.total, rate)
            self._step0, self._t0 = step, time.time()

    @contextlib.contextmanager
    def timed(self, name: str):
        t0 = time.time()
        yield
        logging.info("%s took %.1f s", name, time.time() - t0)


def progress_hooks(total_steps: int, writer, every_steps: int, *, profile_logdir=None,
                   profile_first_step: int = 0, profile_num_steps: int = 5) -> list:
    """[report (with .timed), optional profiler]: clu's hooks where clu imports."""
    if not clu_available():
        if profile_logdir and profile_first_step > 0:
            logging.warning("profile_first_step needs clu (and TensorFlow); not profiling.")
        return [Progress(total_steps, writer, every_steps)]
    from clu import periodic_actions
    hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=every_steps)]
    if profile_logdir and profile_first_step > 0:
        hooks.append(periodic_actions.Profile(
            logdir=str(profile_logdir), first_profile=profile_first_step,
            num_profile_steps=profile_num_steps, profile_duration_ms=None, every_secs=None))
    return hooks
