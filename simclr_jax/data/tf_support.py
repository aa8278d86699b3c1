"""TensorFlow on demand: imported only where tf.data, TFDS or TF's image decoder is used.

Why: the train step, checkpoints, kNN on arrays and `load_encoder` need only JAX, and the
accelerator hosts we are lent have no TensorFlow (its wheel alone exceeds what can be carried
there). A run that does need it on such a machine stops with one line saying what to install
or to use `--config.dataset.on_device=true`.
"""
from __future__ import annotations

from simclr_jax.errors import UserError

_TF = None


def available() -> bool:
    """Whether TensorFlow imports here (imports it, and keeps it off the accelerators)."""
    try:
        tensorflow()
    except UserError:
        return False
    return True


def tensorflow(purpose: str = "the tf.data input pipeline"):
    """The `tensorflow` module, or one UserError naming `purpose` and the two ways out."""
    global _TF
    if _TF is None:
        try:
            import tensorflow as tf
        except ImportError as e:
            raise UserError(
                f"{purpose} needs TensorFlow, which does not import here ({e}); install it "
                f"(pip install tensorflow tensorflow-datasets), or train with "
                f"--config.dataset.on_device=true on a dataset that loads without it "
                f"(digits, npz:/path.npz, folder:/path/to/images).") from None
        try:   # tf.data only needs the host: never let TF reserve GPU memory JAX needs
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TF already initialised its devices; nothing more we can do
            pass
        _TF = tf
    return _TF
