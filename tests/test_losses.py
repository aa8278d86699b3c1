"""Losses against independent numpy references written from the papers' formulas (loops over
anchors, float64), values and gradients (central finite differences of the numpy reference)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import losses


# ----------------------------------------------------------------------------- numpy references

def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_nt_xent(z1, z2, t):
    """SimCLR eq. (1): l(i,j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t); returns
    (loss = mean over view-1 anchors + mean over view-2 anchors, acc, entropy)."""
    h = np.concatenate([_unit(z1), _unit(z2)], 0)
    n2 = h.shape[0]
    n = n2 // 2
    per_anchor, correct, entropy = [], [], []
    for i in range(n2):
        j = i + n if i < n else i - n
        others = [k for k in range(n2) if k != i]
        sims = np.array([h[i] @ h[k] / t for k in others])
        denom = np.sum(np.exp(sims))
        per_anchor.append(-np.log(np.exp(h[i] @ h[j] / t) / denom))
        correct.append(others[int(np.argmax(sims))] == j)
        p = np.exp(sims) / denom
        entropy.append(-np.sum(p * np.log(p)))
    per_anchor = np.array(per_anchor)
    loss = per_anchor[:n].mean() + per_anchor[n:].mean()
    return loss, np.mean(correct), np.mean(entropy)


def np_infonce(q, k, queue, t):
    q, k = _unit(q), _unit(k)
    queue = np.asarray(queue, np.float64)
    total, correct = 0.0, 0
    for i in range(q.shape[0]):
        logits = np.array([q[i] @ k[i]] + [q[i] @ queue[j] for j in range(queue.shape[0])]) / t
        total += -(logits[0] - np.log(np.sum(np.exp(logits))))
        correct += int(np.argmax(logits) == 0)
    return total / q.shape[0], correct / q.shape[0]


def np_ctr(q, k, t):
    q, k = _unit(q), _unit(k)
    total, correct = 0.0, 0
    for i in range(q.shape[0]):
        logits = np.array([q[i] @ k[j] for j in range(k.shape[0])]) / t
        total += -(logits[i] - np.log(np.sum(np.exp(logits))))
        correct += int(np.argmax(logits) == i)
    return total / q.shape[0] * 2 * t, correct / q.shape[0]


def np_byol(p, z):
    p, z = _unit(p), _unit(z)
    return np.mean([2 - 2 * (p[i] @ z[i]) for i in range(p.shape[0])])


def np_distill(s, t, tau):
    """SimCLRv2 distillation colab's add_kd_loss: mean(T^2 * CE(softmax(t / T), s / T))."""
    s = np.asarray(s, np.float64) / tau
    t = np.asarray(t, np.float64) / tau
    total = 0.0
    for i in range(s.shape[0]):
        pt = np.exp(t[i] - t[i].max())
        pt /= pt.sum()
        log_ps = s[i] - s[i].max() - np.log(np.sum(np.exp(s[i] - s[i].max())))
        total += -np.sum(pt * log_ps)
    return tau ** 2 * total / s.shape[0]


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of a float64 numpy function."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def jit_grad(f, argnums):
    """Jitted gradient (eager op-by-op dispatch compiles every op and is much slower)."""
    return jax.jit(jax.grad(f, argnums=argnums))


def _rand(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- NT-Xent

@pytest.mark.parametrize("n,d,t", [(1, 4, 0.2), (2, 3, 0.5), (5, 8, 0.1), (8, 16, 1.0)])
def test_nt_xent_value_and_metrics(n, d, t):
    z1, z2 = _rand(n, n, d), _rand(100 + n, n, d)
    loss, metrics = jax.jit(losses.nt_xent, static_argnums=2)(z1, z2, t)
    ref_loss, ref_acc, ref_ent = np_nt_xent(z1, z2, t)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(metrics["contrast_acc"], ref_acc, atol=1e-6)
    np.testing.assert_allclose(metrics["contrast_entropy"], ref_ent, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (4, 6, 0.1)])
def test_nt_xent_gradient(n, d, t):
    z1, z2 = _rand(7 + n, n, d), _rand(70 + n, n, d)
    g1, g2 = jit_grad(lambda a, b: losses.nt_xent(a, b, t)[0], argnums=(0, 1))(z1, z2)
    np.testing.assert_allclose(g1, fd_grad(lambda a: np_nt_xent(a, z2, t)[0], z1),
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(g2, fd_grad(lambda b: np_nt_xent(z1, b, t)[0], z2),
                               rtol=1e-3, atol=1e-5)


def test_nt_xent_aligned_views_are_easy():
    # Identical, well-separated views: every anchor finds its positive, loss near its minimum.
    z = np.eye(6, dtype=np.float32) * 3.0
    loss, metrics = jax.jit(losses.nt_xent, static_argnums=2)(z, z, 0.1)
    assert float(metrics["contrast_acc"]) == 1.0
    np.testing.assert_allclose(loss, np_nt_xent(z, z, 0.1)[0], rtol=1e-5, atol=1e-6)
    assert float(loss) < 1e-3


def test_nt_xent_bf16_inputs_computed_in_float32():
    z1, z2 = _rand(1, 6, 8), _rand(2, 6, 8)
    b1, b2 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
    loss, _ = jax.jit(losses.nt_xent, static_argnums=2)(b1, b2, 0.1)
    assert loss.dtype == jnp.float32
    ref, _, _ = np_nt_xent(np.asarray(b1, np.float32), np.asarray(b2, np.float32), 0.1)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


def test_nt_xent_shape_error():
    with pytest.raises(ValueError, match="same shape"):
        losses.nt_xent(np.zeros((4, 3)), np.zeros((5, 3)), 0.1)


# ----------------------------------------------------------------------------- MoCo v1/v2

@pytest.mark.parametrize("n,k,d,t", [(3, 5, 4, 0.07), (6, 12, 8, 0.2)])
def test_infonce_queue_value_and_grads(n, k, d, t):
    q, key = _rand(1, n, d), _rand(2, n, d)
    queue = _unit(_rand(3, k, d)).astype(np.float32)
    loss, metrics = jax.jit(losses.infonce_queue, static_argnums=3)(q, key, queue, t)
    ref_loss, ref_acc = np_infonce(q, key, queue, t)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["contrast_acc"], ref_acc, atol=1e-6)

    gq, gk, gqueue = jit_grad(lambda a, b, c: losses.infonce_queue(a, b, c, t)[0],
                              argnums=(0, 1, 2))(q, key, queue)
    np.testing.assert_allclose(gq, fd_grad(lambda a: np_infonce(a, key, queue, t)[0], q),
                               rtol=1e-3, atol=1e-5)
    assert np.all(np.asarray(gk) == 0.0)
    assert np.all(np.asarray(gqueue) == 0.0)


def test_infonce_queue_shape_error():
    with pytest.raises(ValueError, match="queue"):
        losses.infonce_queue(np.zeros((2, 4)), np.zeros((2, 4)), np.zeros((8, 3)), 0.2)


# ----------------------------------------------------------------------------- MoCo v3

@pytest.mark.parametrize("n,d,t", [(4, 5, 1.0), (7, 8, 0.2)])
def test_moco_v3_ctr_value_and_grads(n, d, t):
    q, k = _rand(11, n, d), _rand(12, n, d)
    loss, metrics = jax.jit(losses.moco_v3_ctr, static_argnums=2)(q, k, t)
    ref_loss, ref_acc = np_ctr(q, k, t)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["contrast_acc"], ref_acc, atol=1e-6)

    gq, gk = jit_grad(lambda a, b: losses.moco_v3_ctr(a, b, t)[0], argnums=(0, 1))(q, k)
    np.testing.assert_allclose(gq, fd_grad(lambda a: np_ctr(a, k, t)[0], q),
                               rtol=1e-3, atol=1e-5)
    assert np.all(np.asarray(gk) == 0.0)


def test_moco_v3_symmetric_composition():
    q1, q2, k1, k2 = (_rand(s, 5, 6) for s in (21, 22, 23, 24))
    t = 0.2
    sym = lambda a, b: losses.moco_v3_ctr(a, k2, t)[0] + losses.moco_v3_ctr(b, k1, t)[0]  # noqa
    np.testing.assert_allclose(jax.jit(sym)(q1, q2), np_ctr(q1, k2, t)[0] + np_ctr(q2, k1, t)[0],
                               rtol=1e-5)
    g1, g2 = jit_grad(sym, argnums=(0, 1))(q1, q2)
    np.testing.assert_allclose(g1, fd_grad(lambda a: np_ctr(a, k2, t)[0], q1), rtol=1e-3,
                               atol=1e-5)
    np.testing.assert_allclose(g2, fd_grad(lambda b: np_ctr(b, k1, t)[0], q2), rtol=1e-3,
                               atol=1e-5)


# ----------------------------------------------------------------------------- BYOL

def test_byol_loss_value_and_grads():
    p, z = _rand(31, 6, 5), _rand(32, 6, 5)
    np.testing.assert_allclose(losses.byol_loss(p, z), np_byol(p, z), rtol=1e-5)
    gp, gz = jit_grad(losses.byol_loss, argnums=(0, 1))(p, z)
    np.testing.assert_allclose(gp, fd_grad(lambda a: np_byol(a, z), p), rtol=1e-3, atol=1e-5)
    assert np.all(np.asarray(gz) == 0.0)
    # Same direction -> 0, opposite -> 4, whatever the norms.
    np.testing.assert_allclose(losses.byol_loss(p, 3.0 * p), 0.0, atol=1e-6)
    np.testing.assert_allclose(losses.byol_loss(p, -0.5 * p), 4.0, atol=1e-5)


# ----------------------------------------------------------------------------- distillation

@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_distillation_value_and_grads(tau):
    s, t = _rand(41, 5, 7), _rand(42, 5, 7) * 3
    np.testing.assert_allclose(losses.distillation_loss(s, t, tau), np_distill(s, t, tau),
                               rtol=1e-5)
    gs, gt = jit_grad(lambda a, b: losses.distillation_loss(a, b, tau), argnums=(0, 1))(s, t)
    np.testing.assert_allclose(gs, fd_grad(lambda a: np_distill(a, t, tau), s), rtol=1e-3,
                               atol=1e-6)
    assert np.all(np.asarray(gt) == 0.0)


def test_distillation_with_peaked_teacher_is_hard_label_ce():
    s = _rand(43, 6, 4)
    labels = np.array([0, 3, 1, 2, 2, 0])
    teacher = 1e4 * np.eye(4, dtype=np.float32)[labels]
    log_p = s - np.log(np.sum(np.exp(s.astype(np.float64)), axis=1, keepdims=True))
    hard_ce = -np.mean(log_p[np.arange(6), labels])
    np.testing.assert_allclose(losses.distillation_loss(s, teacher, 1.0), hard_ce, rtol=1e-5)
    np.testing.assert_allclose(losses.softmax_cross_entropy(s, labels), hard_ce, rtol=1e-5)


# ----------------------------------------------------------------------------- probe helpers

def test_softmax_cross_entropy_mask_and_topk():
    logits = _rand(51, 5, 4)
    labels = np.array([1, 0, 3, 3, 2])
    mask = np.array([1, 1, 0, 1, 0], np.float32)
    lp = logits - np.log(np.sum(np.exp(logits.astype(np.float64)), axis=1, keepdims=True))
    per = -lp[np.arange(5), labels]
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, mask),
                               per[[0, 1, 3]].mean(), rtol=1e-5)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, mask > 0),
                               per[[0, 1, 3]].mean(), rtol=1e-5)
    assert float(losses.softmax_cross_entropy(logits, labels, np.zeros(5))) == 0.0

    for k in (1, 2, 4):
        order = np.argsort(-logits, axis=1)[:, :k]
        ref = np.array([labels[i] in order[i] for i in range(5)], np.float32)
        np.testing.assert_array_equal(losses.topk_correct(logits, labels, k), ref)


# ----------------------------------------------------------------------------- NT-Xent + memory

def np_nt_xent_memory(z1, z2, memory, t):
    """NT-Xent where every anchor also has the K memory keys as negatives (explicit loops)."""
    h = np.concatenate([_unit(z1), _unit(z2)], 0)
    mem = np.asarray(memory, np.float64)
    n2 = h.shape[0]
    n = n2 // 2
    per_anchor = []
    for i in range(n2):
        j = i + n if i < n else i - n
        denom = sum(np.exp(h[i] @ h[k] / t) for k in range(n2) if k != i)
        denom += sum(np.exp(h[i] @ m / t) for m in mem)
        per_anchor.append(-np.log(np.exp(h[i] @ h[j] / t) / denom))
    per_anchor = np.array(per_anchor)
    return per_anchor[:n].mean() + per_anchor[n:].mean()


@pytest.mark.parametrize("n,k,d,t", [(2, 4, 3, 0.5), (4, 8, 6, 0.2)])
def test_nt_xent_with_memory_value_and_gradient(n, k, d, t):
    z1, z2 = _rand(30 + n, n, d), _rand(40 + n, n, d)
    memory = _unit(_rand(50 + k, k, d)).astype(np.float32)
    loss, _ = losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2), t, memory=jnp.asarray(memory))
    np.testing.assert_allclose(float(loss), np_nt_xent_memory(z1, z2, memory, t), rtol=1e-5)
    g = jit_grad(lambda a, m: losses.nt_xent(a, jnp.asarray(z2), t, memory=m)[0], (0, 1))
    g_z1, g_mem = g(jnp.asarray(z1), jnp.asarray(memory))
    ref = fd_grad(lambda a: np_nt_xent_memory(a, z2, memory, t), z1)
    np.testing.assert_allclose(np.asarray(g_z1), ref, rtol=1e-3, atol=1e-4)
    assert np.all(np.asarray(g_mem) == 0)          # the memory is never trained
