"""Schedules against hand-computed values; optimizers against numpy re-implementations of the
reference update rules (TF SimCLR LARS, PyTorch SGD, PyTorch AdamW) over several steps."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from simclr_jax import optim


def _values(schedule, steps):
    f = jax.jit(schedule)
    return np.array([float(f(jnp.int32(s))) for s in steps])


# ----------------------------------------------------------------------------- schedules

def test_warmup_cosine_schedule_closed_form():
    peak, total, warm = 2.0, 100, 10
    got = _values(optim.warmup_cosine_schedule(peak, total, warm), [0, 5, 10, 32, 55, 100, 150])
    # 0 at start; halfway through warmup = peak/2; peak at the end of warmup; step 32 is 22/90
    # of the way through the cosine; its middle (step 55) = peak/2; 0 at and after the end.
    expected = [0.0, 1.0, 2.0, 1.0 + math.cos(math.pi * 22 / 90), 1.0, 0.0, 0.0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_cosine_without_warmup_starts_at_peak():
    got = _values(optim.warmup_cosine_schedule(0.5, 40, 0), [0, 20, 40])
    np.testing.assert_allclose(got, [0.5, 0.25, 0.0], atol=1e-7)


def test_step_schedule_moco_v1():
    # MoCo v1: 200 epochs, x0.1 at epochs 120 and 160; 5 steps per epoch here.
    sched = optim.make_lr_schedule("step", peak_lr=0.03, total_steps=1000, warmup_steps=0,
                                   boundaries=(120, 160), steps_per_epoch=5)
    got = _values(sched, [0, 599, 600, 799, 800, 999])
    np.testing.assert_allclose(got, [0.03, 0.03, 0.003, 0.003, 0.0003, 0.0003], rtol=1e-6)
    # Boundaries in steps, with warmup.
    got = _values(optim.step_schedule(1.0, 100, 4, (50, 75)), [0, 2, 4, 49, 50, 75])
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 1.0, 0.1, 0.01], rtol=1e-6)


def test_constant_schedule_and_dispatch():
    got = _values(optim.make_lr_schedule("constant", peak_lr=0.4, total_steps=50,
                                         warmup_steps=4), [0, 1, 4, 49])
    np.testing.assert_allclose(got, [0.0, 0.1, 0.4, 0.4], rtol=1e-6)
    got = _values(optim.make_lr_schedule("cosine", peak_lr=1.0, total_steps=10,
                                         warmup_steps=0), [5])
    np.testing.assert_allclose(got, [0.5], atol=1e-7)


@pytest.mark.parametrize("name,first_epoch", [("cosine_per_epoch", 0),
                                              ("cosine_per_epoch_from_1", 1)])
def test_cosine_per_epoch_matches_moco_adjust_learning_rate(name, first_epoch):
    # main_moco.py / the CIFAR-10 colab: once per epoch, lr = base * 0.5 * (1 + cos(pi e / E)),
    # e = 0..E-1 (main) or 1..E (colab). 4 epochs of 3 steps here.
    spe, epochs, peak = 3, 4, 0.06
    sched = optim.make_lr_schedule(name, peak_lr=peak, total_steps=spe * epochs,
                                   steps_per_epoch=spe)
    want = [peak * 0.5 * (1 + math.cos(math.pi * e / epochs))
            for e in range(first_epoch, first_epoch + epochs) for _ in range(spe)]
    np.testing.assert_allclose(_values(sched, range(spe * epochs)), want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="linear"), "unknown lr_schedule"),
    (dict(name="step"), "needs boundaries"),
    (dict(name="cosine", warmup_steps=10), "warmup_steps"),
    (dict(name="step", boundaries=(5, 3)), "increasing"),
])
def test_schedule_errors(kwargs, match):
    args = dict(peak_lr=1.0, total_steps=10, warmup_steps=0)
    args.update({k: v for k, v in kwargs.items() if k != "name"})
    with pytest.raises(ValueError, match=match):
        optim.make_lr_schedule(kwargs["name"], **args)


def test_ema_momentum():
    f = jax.jit(lambda s: optim.ema_momentum(s, 100, 0.99, "cosine"))
    np.testing.assert_allclose([float(f(s)) for s in (0, 50, 100, 130)],
                               [0.99, 0.995, 1.0, 1.0], rtol=1e-7)
    np.testing.assert_allclose(float(f(25)), 1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2,
                               rtol=1e-7)
    assert float(optim.ema_momentum(37, 100, 0.999, "constant")) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="unknown EMA"):
        optim.ema_momentum(0, 100, 0.99, "linear")


def test_scaled_lr():
    assert optim.scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert optim.scaled_lr(0.075, 4096, "sqrt") == pytest.approx(4.8)
    assert optim.scaled_lr(0.03, 512, "none") == pytest.approx(0.03)
    with pytest.raises(ValueError, match="lr_scaling"):
        optim.scaled_lr(0.3, 256, "quadratic")


def test_resolve_steps():
    kw = dict(examples_per_epoch=1000, batch_size=256)           # 3 full batches per epoch
    assert optim.resolve_steps(num_epochs=10, **kw) == 30
    assert optim.resolve_steps(num_epochs=0.5, **kw) == 2        # 1.5 rounds half up
    assert optim.resolve_steps(num_steps=7, **kw) == 7
    assert optim.resolve_steps(num_epochs=2, examples_per_epoch=100, batch_size=256) == 2
    for bad in (dict(), dict(num_epochs=1, num_steps=3)):
        with pytest.raises(ValueError, match="exactly one"):
            optim.resolve_steps(**bad, **kw)
    with pytest.raises(ValueError, match="num_epochs"):
        optim.resolve_steps(num_epochs=0, **kw)
    with pytest.raises(ValueError, match="num_steps"):
        optim.resolve_steps(num_steps=-3, **kw)
    with pytest.raises(ValueError, match="num_steps"):
        optim.resolve_steps(num_steps=2.5, **kw)


# ----------------------------------------------------------------------------- optimizers

def _tree(rng, zero_kernel=True):
    """The test tree; "zero/kernel" starts at 0 in params (LARS' zero-norm case), not in grads."""
    r = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return {"dense": {"kernel": r(3, 4), "bias": r(4)},
            "bn": {"scale": r(4), "bias": r(4)},
            "probe": {"kernel": r(4, 2), "bias": r(2)},
            "zero": {"kernel": np.zeros((2, 2), np.float32) if zero_kernel else r(2, 2)}}


DECAYED = {("dense", "kernel"), ("zero", "kernel")}   # kernels outside the probe


def _flat(tree):
    return {(a, b): np.asarray(v, np.float64) for a, sub in tree.items() for b, v in sub.items()}


def _run_optax(tx, params, grads_seq):
    params = jax.tree.map(jnp.asarray, params)
    state = tx.init(params)

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for g in grads_seq:
        params, state = step(params, state, g)
    return _flat(params)


def _grads(seed, steps):
    return [_tree(np.random.default_rng(seed + i), zero_kernel=False) for i in range(steps)]


def _lr(count):
    return 0.1 * (count + 1)     # changes every step, so the LR-before-momentum order matters


def _cfg(**kw):
    return ml_collections.ConfigDict(kw)


def test_weight_decay_mask():
    mask = optim.weight_decay_mask(_tree(np.random.default_rng(0)))
    assert mask == {"dense": {"kernel": True, "bias": False},
                    "bn": {"scale": False, "bias": False},
                    "probe": {"kernel": False, "bias": False},
                    "zero": {"kernel": True}}
    nested = {"encoder": {"probe": {"kernel": np.ones((2, 2))},
                          "conv": {"kernel": np.ones((3, 3, 1, 2))}}}
    assert optim.weight_decay_mask(nested) == {"encoder": {"probe": {"kernel": False},
                                                           "conv": {"kernel": True}}}


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_tf_simclr_reference(nesterov):
    wd, eta, mu = 0.05, 1e-3, 0.9
    params = _tree(np.random.default_rng(0))
    grads_seq = _grads(10, 3)
    cfg = _cfg(name="lars", weight_decay=wd, trust_coefficient=eta, momentum=mu,
               nesterov=nesterov)
    got = _run_optax(optim.make_optimizer(cfg, _lr), params, grads_seq)

    # TF SimCLR LARSOptimizer (lars_optimizer.py), per variable, in float64:
    #   g += wd * w                     (if weight decay applies)
    #   trust = eta * |w| / |g| if |w| > 0 and |g| > 0 else 1   (if the trust ratio applies)
    #   v = mu * v + lr * trust * g;  w -= v   (nesterov: w -= mu * v + lr * trust * g)
    w, v = _flat(params), {k: 0.0 for k in _flat(params)}
    for t, grads in enumerate(grads_seq):
        for key, g in _flat(grads).items():
            if key == ("zero", "kernel") and t == 0:
                assert np.linalg.norm(w[key]) == 0.0   # exercises the zero-norm convention
            trust = 1.0
            if key in DECAYED:
                g = g + wd * w[key]
                wn, gn = np.linalg.norm(w[key]), np.linalg.norm(g)
                trust = eta * wn / gn if (wn > 0 and gn > 0) else 1.0
            scaled = _lr(t) * trust * g
            v[key] = mu * v[key] + scaled
            w[key] = w[key] - (mu * v[key] + scaled if nesterov else v[key])
    for key in w:
        np.testing.assert_allclose(got[key], w[key], rtol=2e-5, atol=1e-6, err_msg=str(key))

    # And the mask matters: biases / BN / probe moved by plain momentum SGD (no wd, no trust),
    # kernels did not (trust 1e-3 makes their steps tiny).
    plain = _flat(params)
    buf = {k: 0.0 for k in plain}
    for t, grads in enumerate(grads_seq):
        for key, g in _flat(grads).items():
            buf[key] = mu * buf[key] + _lr(t) * g
            plain[key] = plain[key] - (mu * buf[key] + _lr(t) * g if nesterov else buf[key])
    for key in w:
        if key in DECAYED:
            assert not np.allclose(got[key], plain[key], rtol=1e-3)
        else:
            np.testing.assert_allclose(got[key], plain[key], rtol=2e-5, atol=1e-6)


def test_lars_lr_after_momentum_matches_moco_v3_and_byol_reference():
    wd, eta, mu = 0.05, 1e-3, 0.9
    params = _tree(np.random.default_rng(0))
    grads_seq = _grads(10, 3)
    cfg = _cfg(name="lars", weight_decay=wd, trust_coefficient=eta, momentum=mu,
               nesterov=False, lars_lr="after_momentum")
    got = _run_optax(optim.make_optimizer(cfg, _lr), params, grads_seq)

    # MoCo v3 moco/optimizer.py LARS (BYOL's optimizers.lars is the same order), in float64:
    #   if ndim > 1: dp = g + wd * w; q = eta * |w| / |dp| (1 if either norm is 0); dp *= q
    #   mu_buf = mu * mu_buf + dp;  w -= lr * mu_buf        (the LR comes AFTER the buffer)
    w, buf = _flat(params), {k: 0.0 for k in _flat(params)}
    for t, grads in enumerate(grads_seq):
        for key, g in _flat(grads).items():
            if key in DECAYED:
                g = g + wd * w[key]
                wn, gn = np.linalg.norm(w[key]), np.linalg.norm(g)
                g = g * (eta * wn / gn if (wn > 0 and gn > 0) else 1.0)
            buf[key] = mu * buf[key] + g
            w[key] = w[key] - _lr(t) * buf[key]
    for key in w:
        np.testing.assert_allclose(got[key], w[key], rtol=2e-5, atol=1e-6, err_msg=str(key))


def test_lars_forms_agree_at_constant_lr_and_differ_while_it_changes():
    params = _tree(np.random.default_rng(3), zero_kernel=False)
    grads_seq = _grads(40, 3)

    def run(order, lr):
        cfg = _cfg(name="lars", weight_decay=0.01, momentum=0.9, lars_lr=order)
        return _run_optax(optim.make_optimizer(cfg, lr), params, grads_seq)

    for key, v in run("before_momentum", 0.3).items():
        np.testing.assert_allclose(v, run("after_momentum", 0.3)[key], rtol=1e-5, atol=1e-7)
    before, after = run("before_momentum", _lr), run("after_momentum", _lr)
    assert not np.allclose(before[("dense", "kernel")], after[("dense", "kernel")], rtol=1e-4)
    with pytest.raises(ValueError, match="lars_lr"):
        run("sideways", 0.3)


@pytest.mark.parametrize("decay_all", [True, False])
def test_sgd_pytorch_style(decay_all):
    wd, mu = 0.1, 0.9
    params = _tree(np.random.default_rng(1))
    grads_seq = _grads(20, 3)
    cfg = _cfg(name="sgd", weight_decay=wd, momentum=mu, nesterov=False, decay_all=decay_all)
    got = _run_optax(optim.make_optimizer(cfg, _lr), params, grads_seq)

    # torch.optim.SGD: d = g + wd * w; buf = d (first step) else mu * buf + d; w -= lr * buf.
    w, buf = _flat(params), {}
    for t, grads in enumerate(grads_seq):
        for key, g in _flat(grads).items():
            d = g + wd * w[key] if (decay_all or key in DECAYED) else g
            buf[key] = d if t == 0 else mu * buf[key] + d
            w[key] = w[key] - _lr(t) * buf[key]
    for key in w:
        np.testing.assert_allclose(got[key], w[key], rtol=2e-5, atol=1e-6, err_msg=str(key))


@pytest.mark.parametrize("decay_all", [True, False])
def test_adamw_decay(decay_all):
    wd, b1, b2, eps = 0.3, 0.9, 0.999, 1e-8
    params = _tree(np.random.default_rng(2))
    grads_seq = _grads(30, 3)
    cfg = _cfg(name="adamw", weight_decay=wd, b1=b1, b2=b2, eps=eps, decay_all=decay_all)
    got = _run_optax(optim.make_optimizer(cfg, _lr), params, grads_seq)

    # float32 Adam steps are ~lr in size whatever the gradient, hence the absolute tolerance.
    # torch.optim.AdamW (decoupled): w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w), with
    # the wd term on every parameter (decay_all, the MoCo v3 reference) or only on kernels.
    w = _flat(params)
    m = {k: 0.0 for k in w}
    v = {k: 0.0 for k in w}
    for t, grads in enumerate(grads_seq):
        for key, g in _flat(grads).items():
            m[key] = b1 * m[key] + (1 - b1) * g
            v[key] = b2 * v[key] + (1 - b2) * g * g
            mh, vh = m[key] / (1 - b1 ** (t + 1)), v[key] / (1 - b2 ** (t + 1))
            decay = wd * w[key] if (decay_all or key in DECAYED) else 0.0
            w[key] = w[key] - _lr(t) * (mh / (np.sqrt(vh) + eps) + decay)
    for key in w:
        np.testing.assert_allclose(got[key], w[key], rtol=2e-5, atol=2e-5, err_msg=str(key))


def test_grad_clip():
    params = _tree(np.random.default_rng(3))
    grads = jax.tree.map(lambda g: 100.0 * g, _grads(40, 1)[0])
    cfg = _cfg(name="sgd", weight_decay=0.0, momentum=0.0, grad_clip_norm=1.0)
    got = _run_optax(optim.make_optimizer(cfg, 0.5), params, [grads])
    flat_g = _flat(grads)
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in flat_g.values()))
    for key, w0 in _flat(params).items():
        np.testing.assert_allclose(got[key], w0 - 0.5 * flat_g[key] / norm, rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("cfg", [
    dict(name="lars", weight_decay=0.1, trust_coefficient=1e-3, momentum=0.9),
    dict(name="lars", weight_decay=0.1, trust_coefficient=1e-3, momentum=0.9,
         lars_lr="after_momentum"),
    dict(name="sgd", weight_decay=1e-2, momentum=0.9, decay_all=False),
])
def test_probe_lr_multiplier_equals_a_probe_run_at_that_lr(cfg):
    """The probe at multiplier c moves exactly as it does when the whole run's LR is c x lr
    (the probe has no trust ratio or decay, so its update depends on nothing else); every other
    parameter moves as it does at multiplier 1."""
    params, grads_seq, c = _tree(np.random.default_rng(8)), _grads(60, 3), 0.25
    scaled = _run_optax(optim.make_optimizer(_cfg(**cfg), _lr, probe_lr_multiplier=c),
                        params, grads_seq)
    plain = _run_optax(optim.make_optimizer(_cfg(**cfg), _lr), params, grads_seq)
    slow = _run_optax(optim.make_optimizer(_cfg(**cfg), lambda t: c * _lr(t)), params, grads_seq)
    for key in plain:
        want = slow[key] if key[0] == "probe" else plain[key]
        np.testing.assert_allclose(scaled[key], want, rtol=1e-5, atol=1e-7, err_msg=str(key))
    assert not np.allclose(scaled[("probe", "kernel")], plain[("probe", "kernel")])


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="lars.*sgd.*adamw"):
        optim.make_optimizer(_cfg(name="adam", weight_decay=0.0), 0.1)
    with pytest.raises(ValueError, match="grad_clip_norm"):
        optim.make_optimizer(_cfg(name="sgd", weight_decay=0.0, grad_clip_norm=-1.0), 0.1)


def test_frozen_mask_gives_zero_updates_even_with_weight_decay():
    params = _tree(np.random.default_rng(5))
    grads_seq = _grads(50, 3)
    frozen = jax.tree.map(lambda _: False, params)
    frozen["dense"]["kernel"] = True
    cfg = _cfg(name="adamw", weight_decay=0.5, b1=0.9, b2=0.999, eps=1e-8, decay_all=True)
    got = _run_optax(optim.make_optimizer(cfg, _lr, frozen_mask=frozen), params, grads_seq)
    before = _flat(params)
    for key in before:
        if key == ("dense", "kernel"):
            np.testing.assert_array_equal(got[key], before[key])
        else:
            assert not np.allclose(got[key], before[key]), key


# ----------------------------------------------------------------------------- numpy-array
# schedules, a weight-decay schedule, per-tensor clipping (PyTorch recipes such as DINO's)

def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0,
                     start_warmup_value=0):
    """facebookresearch/dino utils.cosine_scheduler, verbatim in numpy."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (
        1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


@pytest.mark.parametrize("base,final,epochs,niter,warmup", [
    (0.002, 1e-6, 12, 7, 3),      # an LR: linspace warmup, cosine to min_lr
    (0.04, 0.4, 5, 9, 0),         # a weight decay rising 0.04 -> 0.4
    (0.996, 1.0, 4, 5, 0),        # an EMA momentum
    (0.5, 0.0, 3, 4, 1)])
def test_linspace_warmup_cosine_equals_the_numpy_array(base, final, epochs, niter, warmup):
    want = cosine_scheduler(base, final, epochs, niter, warmup_epochs=warmup)
    sched = optim.linspace_warmup_cosine_schedule(base, final, epochs * niter, warmup * niter)
    got = _values(sched, range(epochs * niter))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9)
    assert float(sched(epochs * niter + 5)) == pytest.approx(want[-1], rel=2e-5)  # held after
    via = optim.make_lr_schedule("linspace_warmup_cosine", peak_lr=base, final=final,
                                 total_steps=epochs * niter, warmup_steps=warmup * niter)
    np.testing.assert_allclose(_values(via, range(epochs * niter)), want, rtol=2e-6, atol=1e-9)


def torch_adamw_param_groups(params, grads_seq, lr, wd, regularized, frozen_until, clip,
                             b1=0.9, b2=0.999, eps=1e-8):
    """main_dino.py's loop in numpy: utils.clip_gradients (each tensor's own norm), then
    cancel_gradients_last_layer (grad None -> torch AdamW skips the tensor: no update, no decay,
    its step count and moments wait), then AdamW with lr[it] on every group and wd[it] on the
    regularized one (the other has weight_decay 0)."""
    p = {k: v.astype(np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    count = {k: 0 for k in p}
    for it, grads in enumerate(grads_seq):
        for k in p:
            g = grads[k].astype(np.float64)
            coef = clip / (np.linalg.norm(g.ravel()) + 1e-6)
            if coef < 1:
                g = g * coef
            if it < frozen_until.get(k, 0):
                continue
            count[k] += 1
            p[k] *= 1 - lr[it] * (wd[it] if regularized[k] else 0.0)
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            denom = np.sqrt(v2[k]) / np.sqrt(1 - b2 ** count[k]) + eps
            p[k] -= lr[it] / (1 - b1 ** count[k]) * m[k] / denom
    return p


def test_adamw_with_a_weight_decay_schedule_per_tensor_clipping_and_a_frozen_group():
    """The three together as main_dino.py applies them: the frozen group restarts at the
    global step's LR and weight decay with a fresh Adam state."""
    from simclr_jax.methods import ParamGroup
    rng = np.random.default_rng(0)
    shapes = {"w": (3, 4), "b": (4,), "last": (4, 5)}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads_seq = [{k: (rng.normal(size=s) * rng.choice([0.1, 10.0])).astype(np.float32)
                  for k, s in shapes.items()} for _ in range(8)]
    total, frozen = 8, 3
    lr = cosine_scheduler(0.01, 1e-4, 4, 2, warmup_epochs=1)
    wd = cosine_scheduler(0.04, 0.4, 4, 2)
    cfg = ml_collections.ConfigDict(dict(name="adamw", weight_decay=0.04, weight_decay_end=0.4,
                                         decay_all=False, grad_clip_per_param=3.0))
    tx = optim.make_optimizer(cfg, optim.linspace_warmup_cosine_schedule(0.01, 1e-4, total, 2),
                              groups=(ParamGroup(("last",), frozen_until_step=frozen),),
                              total_steps=total)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)
    for it, g in enumerate(grads_seq):
        u, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, p)
        p = optax.apply_updates(p, u)
        if it < frozen:
            np.testing.assert_array_equal(np.asarray(p["last"]), params["last"])
    want = torch_adamw_param_groups(params, grads_seq, lr, wd,
                                    {"w": True, "b": False, "last": True}, {"last": frozen}, 3.0)
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_per_tensor_clipping_clips_each_tensor_not_the_global_norm():
    tx = optim.clip_each_by_norm(1.0)
    g = {"small": jnp.full((4,), 0.1), "big": jnp.full((4,), 10.0)}     # norms 0.2 and 20
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(np.asarray(out["small"]), np.asarray(g["small"]))
    assert float(jnp.linalg.norm(out["big"])) == pytest.approx(1.0 * 20 / (20 + 1e-6), rel=1e-6)


def test_weight_decay_schedule_needs_adamw_or_sgd():
    from simclr_jax.errors import UserError
    cfg = ml_collections.ConfigDict(dict(name="lars", weight_decay=0.04, weight_decay_end=0.4))
    with pytest.raises(UserError, match="weight_decay_end"):
        optim.make_optimizer(cfg, 0.1, total_steps=10)
