"""InstDisc / NPID (Wu et al., 2018): every training image is its own class, scored against a
memory bank that holds one 128-d feature per image of the WHOLE training split.

As zhirongw/lemniscate.pytorch (lib/NCEAverage.py, NCECriterion.py, LinearAverage.py):
  v = normalise(linear(backbone(x)))                              [B, D], one view per example
  loss "nce" (NCEAverage + NCECriterion): K rows of the bank drawn uniformly per example (column
      0 replaced by the example's own row), P = exp(v.w / T) / Z with Z = mean(exp(v.w / T)) * N
      set ONCE from the first batch and then fixed (kept in the state, so a resume is exact);
      loss = -(sum_b log(P_b0 / (P_b0 + K/N + eps)) + sum_bk log((K/N) / (P_bk + K/N + eps))) / B
  loss "softmax" (LinearAverage + CrossEntropyLoss): CE over v.bank^T / T with the example's own
      row as the label: over every row (num_negatives=0, the reference's `--nce-k 0`), or over
      the own row and K drawn rows (the README's "updated model": softmax-CE, 65536 negatives).
  After the loss: bank[i] <- normalise(m * bank[i] + (1 - m) * v_i) with the row as read before
  the step (m = 0.5), by example index. The bank starts uniform in +-1/sqrt(D/3) (not unit rows).
Negatives come from the step's rng for the whole global batch, so every topology draws the same.
The bank is sharded by rows over the mesh's "data" axis (ImageNet: 1,281,167 x 128 float32 =
656 MB); its rows are padded to a multiple of lcm(128, devices) and the padding is never drawn.
The bank itself (init, draw, read, score, NCE, write, sharding) is methods/memory_bank.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from simclr_jax import losses
from simclr_jax.errors import UserError
from simclr_jax.methods import Method, common
from simclr_jax.methods.memory_bank import (  # noqa: F401  (the bank's API, re-exported)
    EPS, ROW_MULTIPLE, bank_rows, draw_rows, init_bank, nce_loss, nce_probs, read_rows,
    row_logits, update_bank)

LOSSES = ("nce", "softmax")


class InstDisc(Method):
    num_views = (1, 1)
    needs_index = True
    state_config_keys = ("instdisc.",)

    def config_section(self):
        section = ml_collections.ConfigDict()
        section.loss = "nce"             # "nce" (NCEAverage/NCECriterion) | "softmax"
        section.num_negatives = 4096     # K (--nce-k); 0 = every row of the bank (softmax only)
        section.bank_momentum = 0.5      # m (--nce-m)
        return "instdisc", section

    def runlocal(self, c) -> None:
        if c.instdisc.num_negatives > 0:
            c.instdisc.num_negatives = 64

    def validate(self, config, ctx) -> None:
        super().validate(config, ctx)
        s = config.instdisc
        if s.loss not in LOSSES:
            raise UserError(f"instdisc.loss={s.loss!r}: use one of {', '.join(LOSSES)}.")
        if s.num_negatives < 0 or (s.loss == "nce" and s.num_negatives == 0):
            raise UserError(f"instdisc.num_negatives={s.num_negatives}: NCE needs K > 0 drawn "
                            f"negatives (0 = the whole bank works with instdisc.loss=softmax).")
        if not 0.0 <= s.bank_momentum < 1.0:
            raise UserError(f"instdisc.bank_momentum={s.bank_momentum}: give m in [0, 1) "
                            f"(the bank row keeps m, the new feature adds 1 - m).")

    def build_network(self, config, num_classes: int):
        return common.build_ssl_network(config, num_classes)

    def init_state(self, config, network, variables, rng, ctx) -> dict:
        """The bank [rows, D] and, for NCE, Z (-1 until the first batch sets it)."""
        n = ctx.num_train_examples
        state = {"bank": init_bank(rng, n, bank_rows(n, ctx.mesh), config.head.out_dim)}
        if config.instdisc.loss == "nce":
            state["nce_z"] = jnp.full((), -1.0, jnp.float32)
        return state

    def state_sharding(self, config, ctx, state):
        return {k: P("data", None) if k == "bank" else P() for k in state}

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        out, batch_stats = common.apply_train(network, params, state.batch_stats,
                                              batch["view1"])
        v = losses.l2_normalize(out["proj"])                               # [B, D]
        loss, ms, metrics = objective(v, state.method_state, batch["index"], rng,
                                      config.instdisc, config.loss.temperature,
                                      ctx.num_train_examples, ctx.mesh)
        p_loss, p_metrics = common.probe_loss(out, batch["label"], num_views=1)
        return loss + p_loss, (batch_stats, ms, {"loss": loss, **metrics, **p_metrics})


def objective(v, method_state: dict, index, rng, s, T: float, n: int, mesh=None):
    """The loss of unit features v [B, D] of examples `index` [B] against the bank, and the
    state after the step (bank rows written, Z set on the first call). s: config.instdisc;
    mesh: the bank's rows are sharded over its "data" axis (None: one array).
    Returns (loss, method_state, metrics)."""
    ms = dict(method_state)
    bank = ms["bank"]                                                      # [rows, D]
    positive = read_rows(bank, index, mesh)                                # [B, D]
    if s.num_negatives > 0:
        rows = draw_rows(rng, index, s.num_negatives, n)                   # [B, K+1]
        logits = row_logits(bank, rows, v, mesh) / T                       # [B, K+1]
    else:       # LinearAverage: every real row; padded rows are masked out
        logits = (v @ bank.T) / T                                          # [B, rows]
        real = jnp.arange(bank.shape[0]) < n
        logits = jnp.where(real[None, :], logits, -1e30)
    metrics = {}
    if s.loss == "nce":
        out, z = nce_probs(logits, ms["nce_z"], n)                         # [B, K+1], []
        loss = nce_loss(out, n)
        ms["nce_z"] = metrics["nce_z"] = z
    else:
        labels = jnp.zeros_like(index) if s.num_negatives > 0 else index
        loss = losses.softmax_cross_entropy(logits, labels)
    ms["bank"] = update_bank(bank, index, positive, jax.lax.stop_gradient(v), s.bank_momentum,
                             mesh)
    metrics["positive_similarity"] = jnp.mean(jnp.sum(positive * v, axis=1))
    return loss, ms, metrics


METHOD = InstDisc()
