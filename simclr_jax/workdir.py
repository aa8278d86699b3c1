"""What a workdir remembers about its runs, and who may write to it.

Files (all through etils.epath, so a workdir can be gs://bucket/run):
  history.jsonl       one JSON object per event, never truncated: "start" (config, the step it
                      started from, host, config changes), "trained" (the training metrics at
                      the last step, written before the final evaluation) and "finished" (the
                      final metrics).
  config.json         the config of the latest start (what evaluation and export read).
  final_metrics.json  the final metrics of the latest completed run.
  lock.json           the live run: host, pid, start time, heartbeat.

Multi-host: process 0 reads and writes these files and holds the lock on behalf of the whole
job; its decisions (lock refused, config change refused, run already finished) reach the other
processes through `_agree`, so every process stops or goes on together.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from typing import Optional

from absl import logging
import jax
import numpy as np
from etils import epath

from simclr_jax.errors import UserError

HISTORY = "history.jsonl"
CONFIG = "config.json"
FINAL_METRICS = "final_metrics.json"
LOCK = "lock.json"
HEARTBEAT_S = 60.0            # the live run rewrites its lock this often
STALE_AFTER_S = 600.0         # a lock not rewritten for this long belongs to a dead run
_LOCK_SETTLE_S = 0.2          # write, wait, read back: the last of two racing writers wins

# Config keys whose change alters the training state's structure or the data stream: a resumed
# run with a different value would no longer be the run its checkpoints belong to.
# The run's method adds the prefixes of its own config section (methods.state_config_keys).
STATE_OR_DATA_KEYS = ("method", "seed", "batch_size", "model.", "head.", "predictor.",
                      "probe.", "dataset.", "aug.", "optimizer.name")
# Where the data lives or how it is scored is not what it is.
NOT_STATE_OR_DATA = ("dataset.data_dir", "dataset.knn_train_split", "dataset.knn_test_split",
                     "probe.lr_multiplier")
ACCEPT_FLAG = "allow_config_change"


def as_path(uri: str) -> epath.Path:
    """A workdir / data dir as a path object: URIs (gs://...) as given, local paths absolute."""
    uri = os.fspath(uri)
    if "://" in uri:
        return epath.Path(uri)
    return epath.Path(os.path.abspath(os.path.expanduser(uri)))


def _is_chief() -> bool:
    return jax.process_index() == 0


def _agree(chief_error: Optional[str]) -> None:
    """Raise UserError on every process if process 0 found one (its message on process 0)."""
    failed = chief_error is not None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        failed = bool(multihost_utils.broadcast_one_to_all(np.int32(failed)))
    if failed:
        raise UserError(chief_error or "process 0 refused to start this run; see its log.")


def _write_atomically(path: epath.Path, text: str) -> None:
    """Readers see the old or the new file, never a half-written one: an object store
    publishes an object whole; a local file is written aside and renamed (atomic)."""
    if "://" in str(path):
        path.write_text(text)
        return
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(path)


# ----------------------------------------------------------------------------- history

def read_history(workdir) -> list[dict]:
    path = as_path(workdir) / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_event(workdir, event: dict) -> None:
    """Add one event to history.jsonl (process 0 only). Existing lines are kept as they are."""
    if not _is_chief():
        return
    path = as_path(workdir) / HISTORY
    old = path.read_text() if path.exists() else ""
    line = json.dumps({"time": time.time(), **event}, sort_keys=True, default=str)
    _write_atomically(path, old + line + "\n")


def _plain(config) -> dict:
    """The config as JSON values (tuples -> lists), as it is stored."""
    return json.loads(config.to_json_best_effort())


def stored_config(workdir) -> Optional[dict]:
    """The config of the latest start: from history.jsonl, or config.json of an older workdir."""
    from simclr_jax.methods.legacy import migrate_config
    starts = [e for e in read_history(workdir) if e.get("event") == "start"]
    if starts:
        return migrate_config(starts[-1]["config"])
    path = as_path(workdir) / CONFIG
    return migrate_config(json.loads(path.read_text())) if path.exists() else None


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(old: dict, new: dict) -> dict:
    """{dotted key: [old value, new value]} for every key that differs (missing = None)."""
    a, b = _flatten(old), _flatten(new)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k != ACCEPT_FLAG}


def changes_state_or_data(key: str, method_name=None) -> bool:
    from simclr_jax.methods import state_config_keys
    keys = STATE_OR_DATA_KEYS + state_config_keys(method_name)
    return key.startswith(keys) and not key.startswith(NOT_STATE_OR_DATA)


def check_resume(workdir, config, checkpoint_step: Optional[int]) -> dict:
    """The config changes since the latest start, after refusing those that need consent.

    Only matters when there is something to resume (a checkpoint). Changes to the state
    structure or the data stream stop the run unless config.allow_config_change is set;
    schedule-length and logging changes go through. Either way they are recorded by
    `record_start`.
    """
    error, changes = None, {}
    if _is_chief() and checkpoint_step is not None:
        old = stored_config(workdir)
        changes = config_changes(old, _plain(config)) if old is not None else {}
        blocking = {k: v for k, v in changes.items()
                    if changes_state_or_data(k, config.get("method"))}
        if blocking and not config.get(ACCEPT_FLAG, False):
            listed = ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in blocking.items())
            error = (f"the config differs from the run in {workdir} (checkpoint at step "
                     f"{checkpoint_step}) in keys that change the training state or the data "
                     f"stream: {listed}. Use a new --workdir, or pass "
                     f"--config.{ACCEPT_FLAG}=true to continue this run with the new values "
                     f"(recorded in {HISTORY}).")
    _agree(error)
    return changes


def record_start(workdir, config, *, start_step: int, total_steps: int, changes: dict) -> None:
    """Append the start of this run to the history and make its config the current one."""
    if not _is_chief():
        return
    config_json = config.to_json_best_effort(indent=2)
    append_event(workdir, {"event": "start", "start_step": start_step,
                           "total_steps": total_steps, "host": socket.gethostname(),
                           "pid": os.getpid(), "process_count": jax.process_count(),
                           "config": json.loads(config_json), "config_changes": changes})
    _write_atomically(as_path(workdir) / CONFIG, config_json)
    if changes:
        logging.warning("Config changes since the previous start (recorded in %s): %s", HISTORY,
                        ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in changes.items()))


def stored_event(workdir, event: str, step: int) -> Optional[dict]:
    """The metrics of the latest `event` ("trained" | "finished") recorded at `step`."""
    found = [e for e in read_history(workdir) if e.get("event") == event and e.get("step") == step]
    return dict(found[-1]["metrics"]) if found else None


def finished_result(workdir, checkpoint_step: Optional[int], total_steps: int,
                    changes: dict, method_name: Optional[str] = None) -> Optional[dict]:
    """The stored result when this config's run is already complete: nothing to do.

    Not when an accepted change alters the state or the data (that result is another run's).
    """
    result = None
    if (_is_chief() and checkpoint_step == total_steps
            and not any(changes_state_or_data(k, method_name) for k in changes)):
        result = stored_event(workdir, "finished", total_steps)
    if jax.process_count() > 1:   # process 0 decides (only it knows the changes)
        from jax.experimental import multihost_utils
        if multihost_utils.broadcast_one_to_all(np.int32(result is not None)) and result is None:
            result = stored_event(workdir, "finished", total_steps)
    if result is not None and _is_chief():
        logging.warning("%s already finished at step %d: its stored result follows; nothing was "
                        "changed. Pass a larger --config.num_steps to train further.", workdir,
                        total_steps)
    return result


def record_metrics(workdir, event: str, metrics: dict) -> None:
    """Append "trained" or "finished" metrics; "finished" also becomes final_metrics.json."""
    if not _is_chief():
        return
    append_event(workdir, {"event": event, "step": metrics["step"], "metrics": metrics})
    if event == "finished":
        _write_atomically(as_path(workdir) / FINAL_METRICS,
                          json.dumps(metrics, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------- lock

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, someone else's
        return True
    return True


def _stale_reason(lock: dict) -> Optional[str]:
    """Why a lock no longer belongs to a live run, or None if it may."""
    if lock.get("host") == socket.gethostname():
        if lock.get("pid") == os.getpid():
            return "left by an earlier run in this process"
        if not _pid_alive(int(lock.get("pid", -1))):
            return f"its process {lock.get('pid')} on this host is gone"
    age = time.time() - float(lock.get("heartbeat", 0))
    if age > STALE_AFTER_S:
        return f"its heartbeat is {age:.0f} s old (stale after {STALE_AFTER_S:.0f} s)"
    return None


def _read_lock(path: epath.Path) -> dict:
    """The lock's fields; {} for an empty or unreadable one (not JSON: no live run of ours
    wrote it, since locks are written whole), which is then taken over as stale."""
    try:
        lock = json.loads(path.read_text() or "{}")
    except (ValueError, UnicodeDecodeError):
        logging.warning("%s is not a lock this program wrote (not JSON); treating it as stale.",
                        path)
        return {}
    return lock if isinstance(lock, dict) else {}


_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _path_problem(workdir, e: BaseException) -> str:
    """One line saying why `workdir` cannot be used, from the error that showed it."""
    if isinstance(e, FileExistsError) or (isinstance(e, OSError) and e.errno == errno.EEXIST):
        return f"--workdir {workdir} is an existing file, not a directory; pass a directory path."
    if isinstance(e, NotADirectoryError):
        return (f"--workdir {workdir} is under a file, not a directory ({e.filename or workdir}); "
                f"pass a path whose parents are directories.")
    if isinstance(e, OSError) and e.errno in _FULL:
        return (f"no space left on the device of --workdir {workdir} ({e.strerror}); free space "
                f"and re-run the same command.")
    if isinstance(e, OSError) and e.errno in _NOT_WRITABLE:
        return (f"--workdir {workdir} is not writable ({e.strerror}); pass a writable directory, "
                f"or copy a finished run elsewhere to resume it.")
    if isinstance(e, OSError) and e.strerror:
        return f"cannot use --workdir {workdir}: {e.strerror}; pass a writable directory."
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return f"cannot use --workdir {workdir} ({type(e).__name__}: {first}); check the path and " \
           f"your access to it."


class WorkdirLock:
    """One live run per workdir. A context manager; process 0 holds the file for the job.

    A second run refuses with one line. A stale lock (a dead pid on this host, or a heartbeat
    older than STALE_AFTER_S from any host) is taken over with a warning. Acquisition writes
    the lock, waits _LOCK_SETTLE_S and reads it back: of two runs starting at the same moment
    the last writer keeps it and the other refuses. While held, a daemon thread rewrites the
    heartbeat every HEARTBEAT_S.
    """

    def __init__(self, workdir):
        self.workdir = workdir
        self.path = as_path(workdir) / LOCK
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.read_only = False   # a read-only workdir holding a finished run: no lock, no writes

    def _record(self, started: float) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": started,
                "heartbeat": time.time(), "token": self.token}

    def _try_acquire(self) -> Optional[str]:
        """None when this run holds the lock (or may go on without one), else the reason.

        A workdir that cannot be created or written is a user mistake, reported in one line;
        one that is read-only but holds a finished run may still print its stored result
        (self.read_only: nothing is written)."""
        try:
            if self.path.parent.exists() and not self.path.parent.is_dir():
                raise FileExistsError(errno.EEXIST, "File exists", str(self.path.parent))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self._acquire()
        except UserError:
            raise
        except Exception as e:   # the path, the file system or the object store refused
            if (isinstance(e, OSError) and e.errno in _NOT_WRITABLE
                    and (self.path.parent / FINAL_METRICS).exists()):
                logging.warning("%s is not writable (%s): only a finished run's stored result "
                                "can be shown.", self.workdir, e.strerror)
                self.read_only = True
                return None
            return _path_problem(self.workdir, e)

    def _acquire(self) -> Optional[str]:
        if self.path.exists():
            held = _read_lock(self.path)
            reason = _stale_reason(held) if held else "it is empty or unreadable"
            if reason is None:
                since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held.get("started")))
                return (f"{self.workdir} is in use by another run (host {held.get('host')}, "
                        f"pid {held.get('pid')}, started {since}); wait for it to finish or "
                        f"use another --workdir. If that run is dead, delete "
                        f"{self.path} or wait {STALE_AFTER_S:.0f} s for the lock to go stale.")
            logging.warning("Taking over the lock of %s (host %s, pid %s): %s.", self.workdir,
                            held.get("host"), held.get("pid"), reason)
        self._started = time.time()
        _write_atomically(self.path, json.dumps(self._record(self._started)))
        time.sleep(_LOCK_SETTLE_S)
        if _read_lock(self.path).get("token") != self.token:
            return f"{self.workdir} was locked by another run starting at the same moment."
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if _read_lock(self.path).get("token") != self.token:
                    logging.error("The lock of %s was taken over by another run.", self.workdir)
                    return
                _write_atomically(self.path, json.dumps(self._record(self._started)))
            except Exception as e:   # a lost heartbeat only makes the lock look stale later
                logging.warning("Could not refresh the lock of %s: %s", self.workdir, e)

    def __enter__(self) -> "WorkdirLock":
        error = self._try_acquire() if _is_chief() else None
        _agree(error)
        if _is_chief() and not self.read_only:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                            name="workdir-lock-heartbeat")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not _is_chief() or self.read_only:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if _read_lock(self.path).get("token") == self.token:
                self.path.unlink()
        except FileNotFoundError:
            pass
