"""Learning-rate scaling, training length, LR / EMA schedules, and the optimizers.

All schedules are pure functions of the (possibly traced) integer step, returning float32
scalars, so they can live inside the jitted train step and inside optax.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from simclr_jax.errors import UserError

Schedule = Callable[[jnp.ndarray], jnp.ndarray]

LR_SCALINGS = ("linear", "sqrt", "none")
LR_SCHEDULES = ("cosine", "step", "constant", "cosine_per_epoch", "cosine_per_epoch_from_1",
                "linspace_warmup_cosine")
EMA_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("lars", "sgd", "adamw", "larc")
LARS_LR_ORDERS = ("before_momentum", "after_momentum")


# ----------------------------------------------------------------------------- LR and length

def scaled_lr(base_lr: float, batch_size: int, scaling: str = "linear") -> float:
    """Peak LR from a per-recipe base LR.

    "linear": base * B / 256 (SimCLR, MoCo, BYOL); "sqrt": base * sqrt(B) (SimCLR's small-batch
    / long-training variant, e.g. 0.075 * sqrt(4096) = 4.8); "none": base as given.
    """
    if batch_size <= 0:
        raise UserError(f"batch_size must be > 0, got {batch_size}.")
    if scaling == "linear":
        return base_lr * batch_size / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if scaling == "none":
        return float(base_lr)
    raise UserError(f"unknown lr_scaling {scaling!r}; use one of {LR_SCALINGS}.")


def resolve_steps(num_epochs: float | None = None, num_steps: int | None = None, *,
                  examples_per_epoch: int, batch_size: int) -> int:
    """Total optimizer steps from exactly one of num_epochs / num_steps.

    One epoch is floor(examples_per_epoch / batch_size) steps (at least 1), like SimCLR's
    `num_train_examples // batch_size` (the pipeline drops the incomplete last batch, so an
    "epoch" never counts a partial batch). Fractional epochs round half up to whole steps,
    with a minimum of 1 step.
    """
    if (num_epochs is None) == (num_steps is None):
        raise UserError("set exactly one of num_epochs and num_steps (got "
                         f"num_epochs={num_epochs}, num_steps={num_steps}); e.g. "
                         "--config.num_epochs=100 or --config.num_steps=10000.")
    if examples_per_epoch <= 0:
        raise UserError(f"examples_per_epoch must be > 0, got {examples_per_epoch}.")
    if batch_size <= 0:
        raise UserError(f"batch_size must be > 0, got {batch_size}.")
    if num_steps is not None:
        if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps <= 0:
            raise UserError(f"num_steps must be a positive integer, got {num_steps!r}.")
        return int(num_steps)
    if not num_epochs > 0:
        raise UserError(f"num_epochs must be > 0, got {num_epochs!r}.")
    steps_per_epoch = max(1, examples_per_epoch // batch_size)
    return max(1, int(math.floor(num_epochs * steps_per_epoch + 0.5)))


# ----------------------------------------------------------------------------- LR schedules

def _check_lengths(total_steps: int, warmup_steps: int) -> None:
    if total_steps <= 0:
        raise UserError(f"total_steps must be > 0, got {total_steps}.")
    if warmup_steps < 0 or (warmup_steps > 0 and warmup_steps >= total_steps):
        raise UserError(f"warmup_steps must be in [0, total_steps) = [0, {total_steps}), got "
                         f"{warmup_steps}; shorten the warmup or train longer.")


def _linear_warmup(peak_lr: float, warmup_steps: int) -> Schedule:
    """lr(t) = peak * t / warmup: 0 at step 0, peak at step `warmup` (SimCLR's ramp)."""
    return optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1))


def _after_warmup(peak_lr: float, warmup_steps: int, then: Schedule) -> Schedule:
    """The linear warmup for t < warmup_steps, then `then(t - warmup_steps)`."""
    if warmup_steps == 0:
        return then
    return optax.join_schedules([_linear_warmup(peak_lr, warmup_steps), then], [warmup_steps])


def warmup_cosine_schedule(peak_lr: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """lr(t) = peak * t / w for t < w, then peak * (1 + cos(pi * (t - w) / (T - w))) / 2.

    0 at step 0, peak at step w, 0 at step T and after.
    """
    _check_lengths(total_steps, warmup_steps)
    return optax.warmup_cosine_decay_schedule(0.0, peak_lr, warmup_steps, total_steps,
                                              end_value=0.0)


def step_schedule(peak_lr: float, total_steps: int, warmup_steps: int,
                  boundaries: Sequence[int], factor: float = 0.1,
                  factors: Sequence[float] = ()) -> Schedule:
    """Linear warmup, then peak * factor^(number of boundaries <= t) (MoCo v1: x0.1 at epochs
    120 and 160 of 200). `boundaries` are absolute steps (make_lr_schedule converts epochs);
    boundaries past total_steps are simply never reached.

    factors: instead, the LR is peak * factors[i] from boundary i on (one per boundary, not
    cumulative: InvaSpread's 0.1, 0.05, 0.01 at epochs 120, 160, 200)."""
    _check_lengths(total_steps, warmup_steps)
    bounds = [int(b) for b in boundaries]
    if any(b <= 0 for b in bounds) or sorted(bounds) != bounds:
        raise UserError(f"step-schedule boundaries must be positive and increasing, got "
                         f"{tuple(boundaries)}.")
    if factors and (len(factors) != len(bounds) or any(f <= 0 for f in factors)):
        raise UserError(f"lr_boundary_factors={tuple(factors)}: give one positive factor per "
                        f"boundary {tuple(boundaries)} (or none for x{factor} at each).")
    ratios = ([f / prev for f, prev in zip(factors, (1.0, *factors[:-1]))] if factors
              else [factor] * len(bounds))         # piecewise_constant multiplies its scales
    # join_schedules hands the second schedule t - warmup_steps; shift the boundaries with it.
    # A boundary inside the warmup takes effect when the warmup ends.
    scales: dict[int, float] = {}
    for b, ratio in zip(bounds, ratios):
        b = max(b - warmup_steps, 0)
        scales[b] = scales.get(b, 1.0) * ratio
    stepped = optax.piecewise_constant_schedule(peak_lr, scales)
    return _after_warmup(peak_lr, warmup_steps, stepped)


def constant_schedule(peak_lr: float, warmup_steps: int = 0) -> Schedule:
    """Linear warmup to peak, then constant (linear-probe and debugging runs)."""
    if warmup_steps < 0:
        raise UserError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    return _after_warmup(peak_lr, warmup_steps, optax.constant_schedule(peak_lr))


def cosine_per_epoch_schedule(peak_lr: float, total_steps: int, steps_per_epoch: int,
                              warmup_steps: int = 0, first_epoch: int = 0) -> Schedule:
    """MoCo's `adjust_learning_rate`, called once per epoch: lr = peak * (1 + cos(pi e / E)) / 2
    held for all of epoch e, E = total_steps / steps_per_epoch. e counts from `first_epoch`:
    0 in main_moco.py / main_lincls.py (peak in epoch 0), 1 in the MoCo CIFAR-10 colab (its
    first epoch already decayed, its last at 0)."""
    _check_lengths(total_steps, warmup_steps)
    if steps_per_epoch is None or steps_per_epoch <= 0:
        raise UserError("a per-epoch cosine schedule needs steps_per_epoch > 0.")
    num_epochs = total_steps / steps_per_epoch

    def schedule(step):
        t = jnp.asarray(step, jnp.float32)
        epoch = jnp.floor(t / steps_per_epoch) + first_epoch
        cosine = peak_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(epoch / num_epochs, 1.0)))
        return jnp.where(t < warmup_steps, _linear_warmup(peak_lr, warmup_steps)(t), cosine)

    return schedule


def linspace_warmup_cosine_schedule(base_value: float, final_value: float, total_steps: int,
                                    warmup_steps: int = 0,
                                    start_warmup_value: float = 0.0) -> Schedule:
    """The per-step array schedule many PyTorch recipes precompute with numpy (DINO's and
    iBOT's `utils.cosine_scheduler`), as a function of the step:

      t < W:  np.linspace(start, base, W)[t] = start + (base - start) * t / (W - 1)
              (it reaches `base` at step W - 1, not W; W = 1 gives `start`)
      t >= W: final + (base - final) * (1 + cos(pi * (t - W) / (T - W))) / 2

    Steps past the array's end (t >= T) keep its last value. Used for LRs (to a minimum LR),
    weight-decay schedules (base < final) and EMA momenta alike.
    """
    _check_lengths(total_steps, warmup_steps)
    w, n = int(warmup_steps), int(total_steps) - int(warmup_steps)

    def schedule(step):
        t = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps - 1)
        warm = start_warmup_value + (base_value - start_warmup_value) * t / max(w - 1, 1)
        cosine = final_value + 0.5 * (base_value - final_value) * (
            1.0 + jnp.cos(jnp.pi * (t - w) / n))
        return jnp.where(t < w, warm, cosine).astype(jnp.float32)

    return schedule


def make_lr_schedule(name: str, *, peak_lr: float, total_steps: int, warmup_steps: int = 0,
                     boundaries: Sequence[float] = (), steps_per_epoch: int | None = None,
                     factor: float = 0.1, factors: Sequence[float] = (),
                     warmup_start: float = 0.0, final: float = 0.0) -> Schedule:
    """Schedule by name: "cosine" | "step" | "constant" | "cosine_per_epoch" (MoCo) |
    "cosine_per_epoch_from_1" (the MoCo CIFAR-10 colab) | "linspace_warmup_cosine" (numpy's
    linspace warmup from `warmup_start`, then a cosine to `final`, absolute LRs:
    `linspace_warmup_cosine_schedule`).

    For "step", `boundaries` are epochs when steps_per_epoch is given (rounded to the nearest
    step), otherwise absolute steps; `factors` (one per boundary) replace x`factor` at each.
    """
    if name == "cosine":
        return warmup_cosine_schedule(peak_lr, total_steps, warmup_steps)
    if name in ("cosine_per_epoch", "cosine_per_epoch_from_1"):
        return cosine_per_epoch_schedule(peak_lr, total_steps, steps_per_epoch, warmup_steps,
                                         first_epoch=int(name.endswith("from_1")))
    if name == "linspace_warmup_cosine":
        return linspace_warmup_cosine_schedule(peak_lr, final, total_steps, warmup_steps,
                                               start_warmup_value=warmup_start)
    if name == "constant":
        _check_lengths(total_steps, warmup_steps)
        return constant_schedule(peak_lr, warmup_steps)
    if name == "step":
        if not boundaries:
            raise UserError("lr_schedule='step' needs boundaries, e.g. "
                             "--config.lr_boundaries_epochs='(120, 160)'.")
        if steps_per_epoch is not None:
            boundaries = [int(round(b * steps_per_epoch)) for b in boundaries]
        return step_schedule(peak_lr, total_steps, warmup_steps, boundaries, factor,
                             tuple(factors))
    raise UserError(f"unknown lr_schedule {name!r}; use one of {LR_SCHEDULES}.")


# ----------------------------------------------------------------------------- EMA

def ema_momentum(step, total_steps: int, base: float, schedule: str = "constant") -> jnp.ndarray:
    """Target-network EMA coefficient m at `step` (target = m * target + (1 - m) * online).

    "constant": base (MoCo v1/v2: 0.999). "cosine": 1 - (1 - base) * (cos(pi * k / K) + 1) / 2,
    from base at k = 0 to 1 at k = K (BYOL, MoCo v3); k is clipped to [0, K].
    """
    if not 0.0 <= base <= 1.0:
        raise UserError(f"EMA base momentum must be in [0, 1], got {base}.")
    if schedule == "constant":
        return jnp.float32(base)
    if schedule == "cosine":
        if total_steps <= 0:
            raise UserError(f"total_steps must be > 0, got {total_steps}.")
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
        return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0
    raise UserError(f"unknown EMA schedule {schedule!r}; use one of {EMA_SCHEDULES}.")


# ----------------------------------------------------------------------------- optimizers

def _key_name(key) -> str:
    """The name of one step of a pytree path (dict key, attribute or sequence index)."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_names(path) -> tuple:
    return tuple(_key_name(k) for k in path)


def weight_decay_mask(params, exclude: Sequence[str] = ("probe",),
                      exclude_paths: Sequence[tuple] = (), min_ndim: int = 2):
    """Pytree of bools: True where weight decay (and LARS' trust ratio) applies.

    True for arrays with ndim > 1 (kernels, embeddings) whose path contains no key equal to a
    name in `exclude` (at any level) and starts with none of `exclude_paths` (parameter groups
    declared without weight decay). Biases and BN scale/bias are 1-D, so they are False; the
    online probe (like SimCLR's supervised head) is excluded by name. min_ndim=0 (LARC, which
    decays and scales every parameter): arrays of any rank.
    """
    excluded = set(exclude)

    def leaf_mask(path, x):
        names = _path_names(path)
        if any(n in excluded for n in names):
            return False
        if any(names[:len(p)] == tuple(p) for p in exclude_paths):
            return False
        return jnp.ndim(x) >= min_ndim

    return jax.tree_util.tree_map_with_path(leaf_mask, params)


def group_mask(params, prefix: Sequence[str]):
    """True on the leaves whose path starts with `prefix` (a parameter group)."""
    prefix = tuple(prefix)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _path_names(path)[:len(prefix)] == prefix, params)


def lars(learning_rate, weight_decay: float, mask, *, trust_coefficient: float = 1e-3,
         momentum: float = 0.9, nesterov: bool = False,
         lr_order: str = "before_momentum") -> optax.GradientTransformation:
    """LARS with weight decay and trust ratio on the `mask`ed parameters only.

    g' = g + wd * w; g'' = trust * g', trust = eta * ||w|| / ||g'|| (1 where either norm is 0).
    "before_momentum" (TF SimCLR's LARSOptimizer, = optax.lars): m = lr * g'' + mu * m;
      update = -m (nesterov: -(lr * g'' + mu * m)).
    "after_momentum" (BYOL's and MoCo v3's LARS): an LR-free buffer m = g'' + mu * m;
      update = -lr * m (nesterov: -lr * (g'' + mu * m)).
    Identical at constant LR; while the LR changes (warmup, cosine) the second applies today's
    LR to the whole history instead of the LR each gradient arrived with.
    """
    if lr_order == "before_momentum":
        return optax.lars(learning_rate, weight_decay=weight_decay, weight_decay_mask=mask,
                          trust_coefficient=trust_coefficient, trust_ratio_mask=mask,
                          momentum=momentum, nesterov=nesterov)
    if lr_order != "after_momentum":
        raise UserError(f"unknown optimizer.lars_lr {lr_order!r}; use one of {LARS_LR_ORDERS}.")
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask),
        optax.masked(optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient), mask),
        optax.trace(decay=momentum, nesterov=nesterov),
        optax.scale_by_learning_rate(learning_rate))


def larc(learning_rate, weight_decay: float, mask, *, trust_coefficient: float = 1e-3,
         momentum: float = 0.9, eps: float = 1e-8) -> optax.GradientTransformation:
    """apex.parallel.LARC(clip=False) around PyTorch SGD, on the `mask`ed parameters (every
    parameter of the network, biases and BN included; the probe is not):
    where ||w|| > 0 and ||g|| > 0: g' = (g + wd * w) * eta * ||w|| / (||g|| + wd * ||w|| + eps),
    else g' = g (no weight decay either); then SGD's LR-free buffer m = g' + mu * m and
    update = -lr * m. Unmasked parameters: plain SGD without weight decay."""
    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        on = mask(params) if callable(mask) else mask

        def one(g, w, masked):
            if not masked:
                return g
            w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
            ratio = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)
            return jnp.where((w_norm > 0) & (g_norm > 0), (g + weight_decay * w) * ratio, g)

        return jax.tree.map(one, updates, params, on), state

    return optax.chain(optax.GradientTransformation(init, update),
                       optax.trace(decay=momentum),
                       optax.scale_by_learning_rate(learning_rate))


def probe_mask(params):
    """True on the online probe's parameters (a top-level "probe" subtree)."""
    return {k: jax.tree.map(lambda _: k == "probe", v) for k, v in params.items()}


def freeze_until(inner: optax.GradientTransformation, step: int) -> optax.GradientTransformation:
    """`inner` as if its parameters had no gradient before optimizer step `step` (PyTorch's
    p.grad = None, e.g. SwAV's frozen prototypes): zero updates, and neither the momentum nor
    any other state of `inner` advances; from `step` on, `inner` runs as if started there (give
    it a schedule shifted by `step`)."""
    def init(params):
        return (jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        count, inner_state = state
        new_updates, new_inner = inner.update(updates, inner_state, params)
        frozen = count < step
        new_updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u),
                                   new_updates)
        new_inner = jax.tree.map(lambda old, new: jnp.where(frozen, old, new), inner_state,
                                 new_inner)
        return new_updates, (count + 1, new_inner)

    return optax.GradientTransformation(init, update)


def add_scheduled_decayed_weights(schedule: Schedule, mask=None
                                  ) -> optax.GradientTransformation:
    """g + wd(k) * w at the transformation's k-th update (k from 0): a weight decay that follows
    a schedule, e.g. a cosine from 0.04 to 0.4 (PyTorch recipes that set each param group's
    `weight_decay` before every step). Only where `mask` is True (all leaves when None)."""
    def init(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("add_scheduled_decayed_weights needs the parameters")
        wd = schedule(state.count)
        updates = jax.tree.map(lambda g, p: g + wd * p, updates, params)
        return updates, optax.ScaleByScheduleState(
            count=optax.safe_int32_increment(state.count))

    tx = optax.GradientTransformation(init, update)
    return optax.masked(tx, mask) if mask is not None else tx


def clip_each_by_norm(max_norm: float, eps: float = 1e-6) -> optax.GradientTransformation:
    """Clip every parameter's gradient to norm `max_norm` on its own (not the global norm):
    g <- g * c where c = max_norm / (||g|| + eps) < 1, else g unchanged; the norm is over the
    whole tensor. PyTorch recipes that loop over named_parameters (DINO's and iBOT's
    `utils.clip_gradients`) do exactly this."""
    def update(updates, state, params=None):
        del params

        def clip(g):
            coef = max_norm / (jnp.sqrt(jnp.sum(jnp.square(g))) + eps)
            return jnp.where(coef < 1.0, g * coef.astype(g.dtype), g)

        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _base_optimizer(opt_cfg, learning_rate, mask, weight_decay=None
                    ) -> optax.GradientTransformation:
    """The configured optimizer (no clipping, no groups) at `learning_rate`; `weight_decay`
    (a float or a schedule of this optimizer's update count) replaces optimizer.weight_decay."""
    get = opt_cfg.get
    name = get("name")
    wd = float(get("weight_decay", 0.0) or 0.0) if weight_decay is None else weight_decay
    momentum = get("momentum", 0.9)
    nesterov = bool(get("nesterov", False))
    scheduled = callable(wd)
    if name == "lars":
        if scheduled:
            raise UserError("optimizer.weight_decay_end (a weight-decay schedule) is supported "
                            "with optimizer.name adamw or sgd, not lars.")
        return lars(learning_rate, wd, mask, trust_coefficient=get("trust_coefficient", 1e-3),
                    momentum=momentum, nesterov=nesterov,
                    lr_order=get("lars_lr", "before_momentum"))
    if name == "larc":
        return larc(learning_rate, wd, mask, trust_coefficient=get("trust_coefficient", 1e-3),
                    momentum=momentum)
    decay_mask = None if get("decay_all", True) else mask
    if name == "sgd":
        decay = (add_scheduled_decayed_weights(wd, decay_mask) if scheduled
                 else optax.add_decayed_weights(wd, mask=decay_mask))
        return optax.chain(decay,
                           optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
    if name == "adamw":
        if scheduled:   # optax.adamw's chain with the scheduled decay in place of the constant
            return optax.chain(
                optax.scale_by_adam(b1=get("b1", 0.9), b2=get("b2", 0.999), eps=get("eps", 1e-8)),
                add_scheduled_decayed_weights(wd, decay_mask),
                optax.scale_by_learning_rate(learning_rate))
        return optax.adamw(learning_rate, b1=get("b1", 0.9), b2=get("b2", 0.999),
                           eps=get("eps", 1e-8), weight_decay=wd, mask=decay_mask)
    raise UserError(f"unknown optimizer.name {name!r}; use one of {OPTIMIZERS}.")


def weight_decay_schedule(opt_cfg, total_steps: int | None):
    """optimizer.weight_decay as a float, or, with optimizer.weight_decay_end set (and
    different), the cosine from weight_decay to weight_decay_end over the run's steps
    (`linspace_warmup_cosine_schedule` without warmup)."""
    wd = float(opt_cfg.get("weight_decay", 0.0) or 0.0)
    end = opt_cfg.get("weight_decay_end", None)
    if end is None or float(end) == wd:
        return wd
    if end < 0:
        raise UserError(f"optimizer.weight_decay_end must be >= 0, got {end}.")
    if not total_steps:
        raise ValueError("a weight-decay schedule needs total_steps")
    return linspace_warmup_cosine_schedule(wd, float(end), int(total_steps))


def _scaled(learning_rate, multiplier: float, shift: int = 0, fixed: float | None = None):
    """A group's LR: `fixed` (a constant) or the schedule shifted by `shift` steps, x multiplier."""
    if fixed is not None:
        return fixed * multiplier
    if callable(learning_rate):
        return lambda count: multiplier * learning_rate(count + shift)
    return learning_rate * multiplier


def make_optimizer(opt_cfg, learning_rate, frozen_mask=None, probe_lr_multiplier: float = 1.0,
                   groups: Sequence = (), peak_lr: float | None = None,
                   total_steps: int | None = None) -> optax.GradientTransformation:
    """optax optimizer from opt_cfg (fields: name, weight_decay, momentum, nesterov,
    trust_coefficient, b1, b2, eps, decay_all, grad_clip_norm; optional ones via .get).

    learning_rate: float or schedule (step -> lr). The decay mask is computed from the
    updates tree (same structure as the parameters, so the same mask).

    "lars": see `lars`; lars_lr picks where the LR enters ("before_momentum": SimCLR / optax,
      "after_momentum": BYOL / MoCo v3).
    "sgd": PyTorch-style SGD: g' = g + wd * w on every parameter (decay_all=True, the MoCo
      reference) or only on masked ones, then an LR-free momentum buffer m = g' + mu * m and
      update = -lr * m (nesterov: -lr * (g' + mu * m)).
    "larc": see `larc` (SGD under apex LARC, clip=False: every parameter decayed and scaled).
    "adamw": optax.adamw with decoupled weight decay on every parameter (decay_all=True, as
      MoCo v3's ViT reference does with torch AdamW) or on masked parameters only.
    grad_clip_norm (optional): clip the global gradient norm first.
    grad_clip_per_param (optional): clip each parameter's gradient norm on its own first
      (`clip_each_by_norm`).
    weight_decay_end (optional, adamw / sgd): the weight decay follows a cosine from
      weight_decay to this value over `total_steps` (`weight_decay_schedule`); a group frozen
      until a step resumes it at the global step, as its LR.
    groups: `methods.ParamGroup`s. weight_decay=False leaves a group out of weight decay and
      LARS' trust ratio; lr_multiplier scales its updates (every optimizer here is linear in
      the LR, momentum traces included, so that is exactly training it at multiplier x the
      LR); frozen_until_step=FOREVER zeroes its updates (weight decay included). A group with
      fixed_lr (at `peak_lr`) or frozen only until a step gets its own copy of the optimizer
      (optax.multi_transform), so its state never sees the other schedule.
    frozen_mask / probe_lr_multiplier: the same as a frozen group / a ("probe",) group.
    """
    from simclr_jax.methods import FOREVER, ParamGroup

    get = opt_cfg.get
    wd = float(get("weight_decay", 0.0) or 0.0)
    if wd < 0:
        raise UserError(f"optimizer.weight_decay must be >= 0, got {wd}.")
    if probe_lr_multiplier < 0:
        raise UserError(f"probe.lr_multiplier must be >= 0, got {probe_lr_multiplier}.")
    groups = tuple(groups)
    if probe_lr_multiplier != 1.0:
        groups += (ParamGroup(("probe",), lr_multiplier=probe_lr_multiplier,
                              weight_decay=False),)
    for g in groups:
        if g.lr_multiplier < 0:
            raise UserError(f"parameter group {'/'.join(g.path)}: LR multiplier must be >= 0, "
                            f"got {g.lr_multiplier}.")
    no_decay = tuple(g.path for g in groups if not g.weight_decay)
    min_ndim = 0 if get("name") == "larc" else 2
    mask = lambda p: weight_decay_mask(p, exclude_paths=no_decay, min_ndim=min_ndim)  # noqa: E731
    own = [g for g in groups if g.fixed_lr or 0 < g.frozen_until_step < FOREVER]
    shared = [g for g in groups if g not in own]

    clip = get("grad_clip_norm", None)
    if clip is not None and clip <= 0:
        raise UserError(f"optimizer.grad_clip_norm must be > 0 (or unset), got {clip}.")
    wd_of = weight_decay_schedule(opt_cfg, total_steps)
    tx = _base_optimizer(opt_cfg, learning_rate, mask, wd_of)
    if clip is not None and not own:   # (the state layout of checkpoints before param groups)
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    for g in shared:
        if g.lr_multiplier != 1.0 and g.frozen_until_step != FOREVER:
            tx = optax.chain(tx, optax.masked(optax.scale(g.lr_multiplier),
                                              functools.partial(group_mask, prefix=g.path)))
    if own:
        if any(g.fixed_lr for g in own) and peak_lr is None:
            raise ValueError("a fixed-LR parameter group needs peak_lr")
        transforms = {"rest": tx}
        for i, g in enumerate(own):
            start = g.frozen_until_step
            lr = _scaled(learning_rate, g.lr_multiplier, shift=start,
                         fixed=peak_lr if g.fixed_lr else None)
            inner = _base_optimizer(opt_cfg, lr, mask, _scaled(wd_of, 1.0, shift=start))
            transforms[f"group{i}"] = freeze_until(inner, start) if start > 0 else inner

        def labels(params):
            def label(path, _):
                names = _path_names(path)
                for i, g in enumerate(own):
                    if names[:len(g.path)] == tuple(g.path):
                        return f"group{i}"
                return "rest"
            return jax.tree_util.tree_map_with_path(label, params)

        tx = optax.multi_transform(transforms, labels)
        if clip is not None:           # one global norm over every group
            tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    frozen = [g.path for g in shared if g.frozen_until_step == FOREVER]
    if frozen_mask is None and frozen:
        frozen_mask = lambda p: jax.tree.map(  # noqa: E731
            lambda *m: any(m), *[group_mask(p, f) for f in frozen])
    elif frozen:
        user_mask = frozen_mask
        frozen_mask = lambda p: jax.tree.map(  # noqa: E731
            lambda *m: any(m), user_mask(p) if callable(user_mask) else user_mask,
            *[group_mask(p, f) for f in frozen])
    if frozen_mask is not None:
        tx = optax.chain(tx, optax.masked(optax.set_to_zero(), frozen_mask))
    per_param = get("grad_clip_per_param", None)
    if per_param is not None:
        if per_param <= 0:
            raise UserError(f"optimizer.grad_clip_per_param must be > 0 (or unset), got "
                            f"{per_param}.")
        tx = optax.chain(clip_each_by_norm(float(per_param)), tx)
    return tx
