"""A per-example memory bank: one feature row per training example, read and written by the
example's index, its rows sharded over the mesh's "data" axis, and the NCE of scores against
its rows (lemniscate.pytorch's NCEAverage / NCECriterion, which CMC's NCE/ copies).

Facts of the references kept here (methods using the bank: instdisc, cmc):
  init: U(-stdv, stdv), stdv = 1/sqrt(D/3) (rows of norm ~1, not exactly 1);
  negatives: K rows drawn uniformly with replacement (the alias sampler with equal weights),
      column 0 replaced by the example's own row;
  NCE: P = exp(v.w / T) / Z with Z = mean(exp(v.w / T)) * N set ONCE from the first batch and
      then fixed (kept in the state, so a resume is exact); NCECriterion with noise Pn = 1/N;
  update: bank[i] <- normalise(m * bank[i] + (1 - m) * v_i) with the row as read before the
      step, by example index.
The bank's rows are padded to a multiple of lcm(128, devices), and the padding is never drawn.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from simclr_jax import losses

EPS = 1e-7          # NCECriterion's eps
ROW_MULTIPLE = 128  # bank rows are padded to a multiple of lcm(this, devices): the same shape
                    # (so the same checkpoint) on every power-of-two device count up to 128
ROWS_SPEC = P("data", None)   # how a bank is sharded (state_sharding)


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


def nce_probs(logits, z, num_examples: int):
    """NCEAverage's P = exp(logits) / Z [B, K+1] and Z: a negative `z` (not set yet) becomes
    mean(exp(logits)) * N of this batch (no gradient), kept for every later step."""
    e = jnp.exp(logits)                                                    # [B, K+1]
    z = jnp.where(z < 0, jax.lax.stop_gradient(jnp.mean(e)) * num_examples, z)
    return e / z, z


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

    return _on_shards(write, mesh, ROWS_SPEC)(bank, target, new)


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
        fn, mesh=mesh, in_specs=(ROWS_SPEC,) + (P(),) * len(args),
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
