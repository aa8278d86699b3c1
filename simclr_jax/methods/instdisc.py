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
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from simclr_jax import losses
from simclr_jax.errors import UserError
from simclr_jax.methods import Method, common

LOSSES = ("nce", "softmax")
EPS = 1e-7          # NCECriterion's eps
ROW_MULTIPLE = 128  # bank rows are padded to a multiple of lcm(this, devices): the same shape
                    # (so the same checkpoint) on every power-of-two device count up to 128


def bank_rows(num_examples: int, mesh) -> int:
    """Rows of the (padded) bank: N rounded up so the "data" axis splits it evenly."""
    devices = 1 if mesh is None else int(mesh.shape.get("data", mesh.devices.size))
    m = math.lcm(ROW_MULTIPLE, devices)
    return -(-num_examples // m) * m


def init_bank(rng, num_examples: int, rows: int, dim: int):
    """NCEAverage's buffer: U(-stdv, stdv), stdv = 1/sqrt(D/3) (rows of norm ~1, not exactly 1),
    then zero rows up to `rows` (never drawn). [rows, D] float32."""
    stdv = 1.0 / math.sqrt(dim / 3)
    bank = jax.random.uniform(rng, (num_examples, dim), jnp.float32, -stdv, stdv)
    return jnp.pad(bank, ((0, rows - num_examples), (0, 0)))


def draw_rows(rng, index, num_negatives: int, num_examples: int):
    """[B, K+1] bank rows: uniform over the N real rows (with replacement, as the alias sampler
    with equal weights), column 0 = the example's own row."""
    idx = jax.random.randint(rng, (index.shape[0], num_negatives + 1), 0, num_examples)
    return idx.at[:, 0].set(index)


def nce_loss(out, num_examples: int):
    """NCECriterion on P = exp(v.w/T)/Z [B, K+1] (column 0 the positive): noise Pn = 1/N."""
    B, K = out.shape[0], out.shape[1] - 1
    kpn = K / num_examples
    ln_pmt = jnp.log(out[:, 0] / (out[:, 0] + kpn + EPS))                 # [B]
    ln_pon = jnp.log(kpn / (out[:, 1:] + kpn + EPS))                      # [B, K]
    return -(jnp.sum(ln_pmt) + jnp.sum(ln_pon)) / B


def update_bank(bank, index, positive, v, momentum: float, mesh=None):
    """bank[index] <- normalise(m * positive + (1 - m) * v); `positive` [B, D] are the rows as
    read before this step. An index repeated in one batch (an epoch boundary) keeps its last
    occurrence, so every topology writes the same rows."""
    new = losses.l2_normalize(momentum * positive + (1.0 - momentum) * v)   # [B, D]
    later = jnp.triu(index[:, None] == index[None, :], k=1).any(axis=1)     # [B] seen again
    target = jnp.where(later, -1, index)                                     # -1: not written

    def write(bank, target, new):           # on one shard of rows [n_l, D]
        n_l = bank.shape[0]
        r = target - _offset(bank, mesh)
        r = jnp.where((target >= 0) & (r >= 0) & (r < n_l), r, n_l)          # n_l: dropped
        return bank.at[r].set(new.astype(bank.dtype), mode="drop")

    return _on_shards(write, mesh, P("data", None))(bank, target, new)


# ----------------------------------------------------------------------------- sharded bank
# With the bank's rows sharded over "data", every read and write below runs on each device's
# own rows and sums the [B, ...] results (psum), so no device ever holds the whole bank (a
# plain `bank[rows]` makes XLA all-gather it: +626 MiB per device for ImageNet).

def _sharded(mesh) -> bool:
    return mesh is not None and int(mesh.shape.get("data", 1)) > 1


def _offset(bank_shard, mesh):
    """The global row of this shard's first row."""
    if not _sharded(mesh):
        return 0
    return jax.lax.axis_index("data") * bank_shard.shape[0]


def _on_shards(fn, mesh, out_spec):
    """fn(bank_shard, *replicated args) on every shard of the bank's rows (or on the whole bank
    without a sharded mesh)."""
    if not _sharded(mesh):
        return fn
    return lambda bank, *args: jax.shard_map(
        fn, mesh=mesh, in_specs=(P("data", None),) + (P(),) * len(args),
        out_specs=out_spec)(bank, *args)


def read_rows(bank, index, mesh=None):
    """bank[index] [B, D]: each shard contributes the rows it holds."""
    def read(bank, index):
        n_l = bank.shape[0]
        r = index - _offset(bank, mesh)
        ok = (r >= 0) & (r < n_l)
        rows = jnp.where(ok[:, None], bank[jnp.clip(r, 0, n_l - 1)], 0.0)
        return jax.lax.psum(rows, "data") if _sharded(mesh) else rows
    return _on_shards(read, mesh, P())(bank, index)


def row_logits(bank, rows, v, mesh=None):
    """v_b . bank[rows[b, k]] [B, K+1]. Sharded: each shard scores the whole batch against its
    rows (v @ shard^T, [B, N / devices]) and picks the drawn ones, instead of gathering
    [B, K+1, D] rows of a bank it does not hold."""
    if not _sharded(mesh):
        return jnp.einsum("bkd,bd->bk", bank[rows], v)                  # [B, K+1]

    def score(bank, rows, v):
        n_l = bank.shape[0]
        r = rows - _offset(bank, mesh)
        ok = (r >= 0) & (r < n_l)
        s = v @ bank.T                                                   # [B, n_l]
        picked = jnp.take_along_axis(s, jnp.clip(r, 0, n_l - 1), axis=1)  # [B, K+1]
        return jax.lax.psum(jnp.where(ok, picked, 0.0), "data")
    return _on_shards(score, mesh, P())(bank, rows, v)


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
        e = jnp.exp(logits)                                                # [B, K+1]
        z = jnp.where(ms["nce_z"] < 0, jax.lax.stop_gradient(jnp.mean(e)) * n, ms["nce_z"])
        loss = nce_loss(e / z, n)
        ms["nce_z"] = metrics["nce_z"] = z
    else:
        labels = jnp.zeros_like(index) if s.num_negatives > 0 else index
        loss = losses.softmax_cross_entropy(logits, labels)
    ms["bank"] = update_bank(bank, index, positive, jax.lax.stop_gradient(v), s.bank_momentum,
                             mesh)
    metrics["positive_similarity"] = jnp.mean(jnp.sum(positive * v, axis=1))
    return loss, ms, metrics


METHOD = InstDisc()
