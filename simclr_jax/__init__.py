"""simclr_jax: contrastive self-supervised learning (SimCLR, MoCo, BYOL) in JAX/Flax."""

__version__ = "0.1.0"


def load_encoder(path: str, step: int | None = None):
    """Pretrained encoder from a workdir or export directory (see simclr_jax.export)."""
    from simclr_jax.export import load_encoder as _load
    return _load(path, step)
