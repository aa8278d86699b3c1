"""Command line: python -m simclr_jax.main --config configs/<file>.py[:preset] --workdir DIR.

Kept tiny on purpose: parse flags, join the other hosts if there are any, call
`train.train_and_evaluate`. Config overrides: --config.batch_size=512 --config.model.depth=50.

Exit status: 0 finished; 2 a usage or config mistake (one line on stderr); 3 stopped early
(SIGTERM / preemption, or a first Ctrl-C) with a checkpoint saved: re-run the same command to
resume; 130 a second Ctrl-C (aborted, the last complete checkpoint is kept);
1 anything else (a bug: traceback).
"""
from __future__ import annotations

import errno
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from simclr_jax.errors import DivergedError, UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/<method>.py[:preset]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events, "
                               "config.json. Re-running with the same workdir resumes.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' does so when JAX's cluster detection finds one "
    "(Cloud TPU slice, GKE, SLURM, Open MPI, Kubernetes) or a coordinator/process count/process "
    "id is given by flag or JAX_* environment variable.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0 (env JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes in the cluster (env JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's id in [0, num_processes) (env JAX_PROCESS_ID).")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 30, "Seconds without a heartbeat after which a process is declared "
    "dead and the others abort (the detection time of a dead peer).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax  # after flag parsing so --help is fast

    # Checkpointing libraries log every save step at INFO; keep the console for our metrics.
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)

    from simclr_jax import distributed, preemption
    try:
        settings = distributed.resolve_settings(_COORDINATOR.value, _NUM_PROCESSES.value,
                                                _PROCESS_ID.value)
        distributed.join(_DISTRIBUTED.value, settings, _HEARTBEAT.value)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].platform)

    from simclr_jax.data import tf_support
    tf_support.available()     # tf.data only (where TF imports): the accelerators are JAX's

    _quiet_failed_saves()

    # The input iterators of the run, destroyed only at the end (see train_and_evaluate).
    keep_alive: list = []
    try:
        summary = run_mode(_loaded_config(), _WORKDIR.value, keep_alive)
    except (UserError, DivergedError) as e:  # anything else is a bug: keep its traceback
        print(f"error: {e}", file=sys.stderr)
        _quiet_abandoned_tasks()
        sys.exit(2)
    except OSError as e:   # a full or read-only disk under a workdir file: not a bug
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        print(f"error: cannot write {e.filename or _WORKDIR.value}: {e.strerror}; free space (or "
              f"make it writable) and re-run the same command: the checkpoints already written "
              f"are kept.", file=sys.stderr)
        _quiet_abandoned_tasks()
        sys.exit(2)
    except KeyboardInterrupt:   # Ctrl-C outside a training loop (start-up, an evaluation)
        print(f"error: interrupted; the checkpoints already in {_WORKDIR.value} are kept: re-run "
              f"the same command to go on.", file=sys.stderr)
        preemption.exit_now(preemption.EXIT_INTERRUPTED)
    if jax.process_index() == 0:
        print(format_summary(summary), flush=True)
    if summary.get("stopped"):
        # Everything is durable; skip the interpreter's slow teardown (see exit_now), which
        # could outlast a preemption grace period.
        preemption.exit_now(preemption.EXIT_STOPPED)


def _is_closed_loop_callback(exc) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


class _DropFailedWrites:
    """asyncio log filter: drops "Task exception was never retrieved" for a write that failed
    because the disk is full (checkpoint.py reports that save in one line)."""

    def filter(self, record) -> bool:
        from simclr_jax.checkpoint import disk_full
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and disk_full(exc))


def _quiet_failed_saves() -> None:
    """When a checkpoint save fails on a full disk, orbax abandons the save's write tasks and
    closes its asyncio loop while tensorstore writes are still completing. Each abandoned task
    was logged as "Task exception was never retrieved" with its traceback, and each completion
    calling back into the closed loop printed a bare RuntimeError("Event loop is closed")
    traceback: 170 tracebacks around the one error line (seen 2026-12-06). They say nothing
    the error line does not, so they are not printed; any other exception keeps its traceback."""
    import logging as std_logging
    std_logging.getLogger("asyncio").addFilter(_DropFailedWrites())
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def on_exception(kind, value, tb):
        if not _is_closed_loop_callback(value):
            excepthook(kind, value, tb)

    def on_unraisable(info):
        if not _is_closed_loop_callback(info.exc_value):
            unraisablehook(info)

    sys.excepthook, sys.unraisablehook = on_exception, on_unraisable


def _quiet_abandoned_tasks() -> None:
    """After a reported error, the writes of an abandoned save (a full disk) are garbage-collected
    at exit and asyncio logs each one's traceback ("Task exception was never retrieved"), and
    Python warns of their never-awaited coroutines: the error line above already says what
    happened, so these are not printed."""
    import logging as std_logging
    import warnings
    std_logging.getLogger("asyncio").disabled = True
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited")


def _loaded_config():
    """The --config value; a config file that does not exist is a user mistake.

    config_flags defers a failed load to the first use, as an OSError whose cause names
    the file in text ("[Errno 2] No such file or directory: ..."); other failures are bugs in
    the config file and keep their traceback.
    """
    try:
        config = _CONFIG.value
        config.get("mode")   # a failed load raises here, at the first attribute access
        return config
    except OSError as e:
        cause = e
        while cause is not None and "[Errno 2]" not in str(cause):
            cause = cause.__cause__
        if cause is None:
            raise
        reason = str(cause).strip().splitlines()[-1].strip()
        raise UserError(f"cannot load --config: {reason}; pass an existing file, e.g. "
                        f"--config configs/quickstart.py") from None


MODES = ("pretrain", "knn_eval", "linear_eval", "finetune", "distill")


def run_mode(config, workdir, keep_alive: list | None = None):
    """config.mode picks the job: pretraining or one of the evaluation protocols (`keep_alive`:
    see train.train_and_evaluate)."""
    import importlib

    from simclr_jax import train
    mode = config.get("mode", "pretrain")
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "pretrain":
        return train.train_and_evaluate(config, workdir, keep_alive=keep_alive)
    return importlib.import_module(f"simclr_jax.evaluate.{mode}").run(config, workdir)


def format_summary(summary: dict) -> str:
    if summary.get("stopped"):
        return (f"stopped at step {summary.get('step')} of {summary.get('total_steps')}; "
                f"checkpoint saved; re-run the same command to resume")
    lines = [f"finished at step {summary.get('step')}"]
    for key in ("loss", "contrast_acc", "probe_acc", "top1", "top5", "agreement",
                "teacher_top1", "num_eval_examples"):
        if isinstance(summary.get(key), (int, float)):
            lines.append(f"  {key:<24s} {summary[key]:.4f}")
    for key in sorted(k for k in summary if k.startswith("knn_") and not k.endswith("_init")
                      and isinstance(summary[k], (int, float))):
        init = summary.get(f"{key}_init")
        extra = f"   (random init: {init:.4f})" if init is not None else ""
        lines.append(f"  {key + ' (learned)':<24s} {summary[key]:.4f}{extra}")
    return "\n".join(lines)


def _parse_flags(argv):
    """absl flag parsing, with config mistakes (unknown key, bad value) as one clear line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        if any(line.startswith("Traceback") for line in lines):  # keep the cause, not the trace
            lines = [lines[0], lines[-1]]
        print("error: " + " ".join(lines), file=sys.stderr)
    except (KeyError, AttributeError, TypeError, ValueError) as e:
        print(f"error: bad --config override: {_override_message(e, argv)}", file=sys.stderr)
    sys.exit(2)


def _override_message(e: BaseException, argv) -> str:
    """One readable line for a failed --config.key=value: config_flags wraps the KeyError of an
    unknown key in an AttributeError, and KeyError's text is its repr (quotes, a literal \\n)."""
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    text = str(e.args[0]) if e.args else str(e)
    if not isinstance(e, KeyError):
        return " ".join(text.split())
    name = text.splitlines()[0].strip().strip("'\"")
    keys = [a[len("--config."):].partition("=")[0] for a in argv if a.startswith("--config.")]
    key = next((k for k in keys if k.split(".")[-1] == name or k.startswith(name + ".")), name)
    return f"--config.{key}: no such key{_key_hint(argv, key)}"


def _key_hint(argv, key: str) -> str:
    """'; did you mean --config.x?' from the config file's keys, or the keys at that level."""
    import difflib

    from simclr_jax.config_base import load_config_file
    spec = next((a.partition("=")[2] for a in argv if a.startswith("--config=")), None)
    if spec is None and "--config" in argv[:-1]:
        spec = argv[argv.index("--config") + 1]
    try:
        file, _, preset = spec.partition(":")
        config = load_config_file(file, preset or None).to_dict()
    except Exception:   # only for the hint: the error line stands without it
        return ""

    def flat(tree, prefix=""):
        for k, v in tree.items():
            yield prefix + k
            if isinstance(v, dict):
                yield from flat(v, prefix + k + ".")

    names = list(flat(config))
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.75)
    if close:
        return "; did you mean " + " or ".join(f"--config.{c}" for c in close) + "?"
    parent = key.rpartition(".")[0]
    level = [n for n in names if n.rpartition(".")[0] == parent]
    where = f"under {parent}" if parent else "at the top level"
    return f"; the keys {where} are: {', '.join(level)}."


def run():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
