"""simclr_jax: contrastive self-supervised learning (SimCLR, MoCo, BYOL) in JAX/Flax."""

__version__ = "0.1.0"
