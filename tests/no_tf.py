"""An environment where `import tensorflow` (and tensorflow_datasets, clu) raises ImportError,
like the accelerator hosts we are lent: a directory of stub packages put first on PYTHONPATH."""
import os

from tiny_configs import ROOT

BLOCKED = ("tensorflow", "tensorflow_datasets", "clu")


def blocked_env(tmp_dir, **extra) -> dict:
    """os.environ plus PYTHONPATH = <stubs>:<repo>:<tests>; each stub raises on import."""
    stubs = os.path.join(str(tmp_dir), "blocked_imports")
    for name in BLOCKED:
        os.makedirs(os.path.join(stubs, name), exist_ok=True)
        with open(os.path.join(stubs, name, "__init__.py"), "w") as f:
            f.write(f"raise ImportError('{name} is not installed on this machine (test stub)')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([stubs, ROOT, os.path.join(ROOT, "tests")])
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env
