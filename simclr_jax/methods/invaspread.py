"""InvaSpread (Ye et al., CVPR 2019): invariant and spreading instance features.

One encoder, a linear 128-d embedding L2-normalised; view 1 ("the instance", un-augmented in
the paper) and view 2 (its augmented copy) go through the network in one forward pass. The
loss is the official `BatchCriterion` (mangye16/Unsupervised_Embedding_Learning,
BatchAverage.py) over the 2B features of the GLOBAL batch: every feature is an anchor; its
positive is the other view of its image, and every other feature of the batch is a negative
("spreading"). Each anchor gets the probability of its positive, p_i = e_ip / sum_{j != i} e_ij,
and of every negative not being recognised as instance i, 1 - e_ij / sum_k e_ik (the NCE-style
binary term, eq. 7 of the NPID paper), with e_ij = exp(f_i . f_j / T).

Gradients, as in the reference: only the anchor side of every inner product is
differentiated (the reference multiplies by `x.data`), and both views are anchors, so both
views receive gradients, each through its own rows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax import losses
from simclr_jax.errors import UserError
from simclr_jax.methods import Method, common


def batch_criterion(x: jnp.ndarray, temperature: float, negative_weight: float = 1.0):
    """The reference's BatchCriterion on x [2B, D] (rows 0..B-1 view 1, B..2B-1 view 2, each
    L2-normalised); returns (loss, mean positive probability). negative_weight is the
    reference's `--batch-m` (1: every negative counts once)."""
    n = x.shape[0]
    sg = jax.lax.stop_gradient(x)
    partner = jnp.roll(sg, n // 2, axis=0)                              # [2B, D] other view
    pos = jnp.exp(jnp.sum(x * partner, axis=1) / temperature)           # [2B]
    off_diagonal = 1.0 - jnp.eye(n, dtype=x.dtype)
    all_prob = jnp.exp(x @ sg.T / temperature) * off_diagonal           # [2B, 2B]
    all_div = all_prob.sum(axis=1)                                      # [2B]
    if negative_weight != 1.0:
        all_div = (all_div - pos) * negative_weight + pos
    p_pos = pos / all_div                                               # [2B]
    # log P(j is not instance i) over every j (the diagonal adds log 1 = 0), less the positive
    ln_neg = jnp.sum(jnp.log(1.0 - all_prob / all_div[:, None]), axis=1) - jnp.log(1.0 - p_pos)
    loss = -(jnp.sum(jnp.log(p_pos)) + negative_weight * jnp.sum(ln_neg)) / n
    return loss, jnp.mean(p_pos)


class InvaSpread(Method):
    state_config_keys = ()      # no state beyond the network's

    def config_section(self):
        section = ml_collections.ConfigDict()
        section.negative_weight = 1.0     # the reference's --batch-m (negM): weight of negatives
        return "invaspread", section

    def validate(self, config, ctx) -> None:
        super().validate(config, ctx)
        if config.invaspread.negative_weight <= 0:
            raise UserError(f"invaspread.negative_weight must be > 0 (the reference's --batch-m),"
                            f" got {config.invaspread.negative_weight}.")
        if config.loss.temperature < 0.02:   # exp(1 / T) of float32 features overflows at ~0.011
            raise UserError(f"loss.temperature={config.loss.temperature}: the reference's "
                            f"un-shifted exp(f.f / T) overflows float32 below ~0.02; use 0.05-0.1.")
        sizes = {config.aug[v].get("image_size") or config.dataset.image_size
                 for v in ("view1", "view2")}
        if len(sizes) > 1:
            raise UserError(f"method invaspread encodes both views in one forward pass: "
                            f"aug.view1 and aug.view2 need the same image_size, got "
                            f"{sorted(sizes)}.")

    def build_network(self, config, num_classes: int):
        return common.build_ssl_network(config, num_classes)

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        x = jnp.concatenate([batch["view1"], batch["view2"]], axis=0)    # [2B, H, W, 3]
        out, batch_stats = common.apply_train(network, params, state.batch_stats, x)
        features = losses.l2_normalize(out["proj"])                     # [2B, D]
        loss, p_pos = batch_criterion(features, config.loss.temperature,
                                      float(config.invaspread.negative_weight))
        p_loss, p_metrics = common.probe_loss(out, batch["label"], num_views=2)
        metrics = {"loss": loss, "positive_prob": p_pos, **p_metrics}
        return loss + p_loss, (batch_stats, state.method_state, metrics)


METHOD = InvaSpread()
