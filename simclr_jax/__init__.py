"""simclr_jax: contrastive self-supervised learning (SimCLR, MoCo, BYOL) in JAX/Flax."""

__version__ = "0.1.0"


def load_encoder(path: str, step: int | None = None, encoder: str | None = None):
    """Pretrained encoder from a workdir, an export directory or a weights file (see
    simclr_jax.export); `encoder` picks another encoder inside a weights file."""
    from simclr_jax.export import load_encoder as _load
    return _load(path, step, encoder)
