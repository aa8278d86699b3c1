"""Run a simclr_jax entry point against a GCS emulator (test_gcs.py starts it and sets the env).

    python tests/gcs_cli.py main ARGS...      # python -m simclr_jax.main ARGS
    python tests/gcs_cli.py export ARGS...    # python -m simclr_jax.export ARGS
    python tests/gcs_cli.py features EXPORT_DIR WORKDIR   # max |difference| of their features

Each layer is pointed at the emulator by its own setting (see test_gcs.py), with two
adaptations for what cannot be:
- TensorBoard: events go through TensorFlow's GCS filesystem, whose endpoint is fixed
  (www.googleapis.com, no override in TF 2.21): the writer is replaced by a logging-only one.
- gcsfs (epath's backend for gs:// with EPATH_USE_TF=false) writes no directory objects on
  mkdir, while TensorFlow's GCS filesystem, epath's default on real buckets, does and orbax
  relies on them: mkdir writes the same "dir/" marker object here.
And one guard: a gs:// string passed from simclr_jax code to os.path, os or open raises, so a
path that would silently land on the local disk fails the run.
"""
import builtins
import os
import sys


def _guard_local_file_apis():
    def guarded(module, name):
        original = getattr(module, name)

        def check(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if os.sep + "simclr_jax" + os.sep in caller and any(
                    isinstance(a, (str, os.PathLike)) and "gs:" in os.fspath(a) for a in args):
                raise AssertionError(f"{name}{args} called from {caller} on a gs:// path")
            return original(*args, **kwargs)
        setattr(module, name, check)

    for name in ("abspath", "join", "exists", "isdir", "isfile", "dirname", "basename",
                 "expanduser", "realpath"):
        guarded(os.path, name)
    for name in ("makedirs", "listdir", "stat", "walk", "replace", "remove"):
        guarded(os, name)
    guarded(builtins, "open")


def _gcsfs_directory_markers():
    import gcsfs
    original = gcsfs.GCSFileSystem._mkdir

    async def mkdir(self, path, create_parents=True, **kwargs):
        _, key, _ = self.split_path(path)
        if not key:   # a bucket
            return await original(self, path, create_parents=create_parents, **kwargs)
        await self._pipe_file(path.rstrip("/") + "/", b"")
    gcsfs.GCSFileSystem._mkdir = mkdir


def _logging_only_tensorboard():
    from clu import metric_writers
    create = metric_writers.create_default_writer
    metric_writers.create_default_writer = (
        lambda logdir, **kwargs: create(logdir, **{**kwargs, "just_logging": True}))


def features(export_dir, workdir):
    import numpy as np

    import simclr_jax
    from simclr_jax.data import embedded
    images = embedded.digits_arrays()[0][:8]
    a = np.asarray(simclr_jax.load_encoder(export_dir)(images))
    b = np.asarray(simclr_jax.load_encoder(workdir)(images))
    print(f"max_abs_diff={np.max(np.abs(a - b))} std={np.std(a)}")


if __name__ == "__main__":
    _gcsfs_directory_markers()
    _logging_only_tensorboard()
    _guard_local_file_apis()
    command, sys.argv = sys.argv[1], [sys.argv[0]] + sys.argv[2:]
    if command == "main":
        from simclr_jax import main
        main.run()
    elif command == "export":
        from simclr_jax import export
        export.main()
    else:
        features(*sys.argv[1:])
