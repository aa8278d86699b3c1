"""Methods are found by module name: config.method = "simclr" -> simclr_jax.methods.simclr.

Each method module provides:
  build_network(config, num_classes) -> SSLNetwork
  init_extras(config, network, variables, rng) -> dict of extra TrainState fields (may be {})
  compute_loss(network, config, params, state, batch, rng) -> (loss, (batch_stats, extras, metrics))
      loss: what is differentiated (the method's loss + the online probe's cross-entropy);
      metrics["loss"]: the method's loss alone, the number the references report
  after_update(network, config, state, total_steps) -> state   (EMA, etc.; identity for SimCLR)
  validate(config, num_train_examples) -> None   (raise UserError on impossible settings)
"""
import importlib
from simclr_jax.errors import UserError

AVAILABLE = ("simclr", "moco", "moco_v3", "byol")


def get_method(name: str):
    if name not in AVAILABLE:
        raise UserError(f"unknown method {name!r}; valid: {', '.join(AVAILABLE)} "
                         f"(set --config.method=...)")
    return importlib.import_module(f"simclr_jax.methods.{name}")
