"""Losses of the contrastive / self-distillation methods, as pure jnp functions.

Every function computes in float32 whatever the input dtype (bf16 projections give the same
loss up to the rounding of the inputs): softmax over thousands of logits with T = 0.1 is not
something to do in bf16.

The batch given to these functions is the GLOBAL batch (a sharded `jax.Array` under jit), so
"negatives from all devices" needs no explicit all-gather here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Added to the self-similarity logits so they vanish from the softmax, as in the SimCLR reference
# (`LARGE_NUM = 1e9`). Finite, so 0 * log p stays 0 in the entropy metric (no NaN).
LARGE_NUM = 1e9


def l2_normalize(x: jnp.ndarray, axis: int = -1, eps: float = 1e-12) -> jnp.ndarray:
    """x / ||x|| in float32, like tf.math.l2_normalize (eps on the squared norm, safe at 0)."""
    x = x.astype(jnp.float32)
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps))


def _check_pair(name: str, a: jnp.ndarray, b: jnp.ndarray, a_name: str, b_name: str) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{name}: {a_name} and {b_name} must both be [N, D] with the same shape, "
                         f"got {a_name}{tuple(a.shape)} and {b_name}{tuple(b.shape)}.")


def _row_metrics(logits: jnp.ndarray, labels: jnp.ndarray) -> dict:
    """Top-1 accuracy of the positive and mean softmax entropy of each anchor's row (no grad)."""
    logits = jax.lax.stop_gradient(logits)                       # [A, C]
    logp = jax.nn.log_softmax(logits, axis=-1)                   # [A, C]
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)            # [A]
    acc = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)  # [A]
    return {"contrast_acc": jnp.mean(acc), "contrast_entropy": jnp.mean(entropy)}


def _cross_entropy_rows(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-row CE with integer labels: [A, C], [A] -> [A]."""
    logp = jax.nn.log_softmax(logits, axis=-1)                   # [A, C]
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def nt_xent(z1: jnp.ndarray, z2: jnp.ndarray, temperature: float,
            memory: jnp.ndarray | None = None):
    """SimCLR's NT-Xent over the 2N views of a (global) batch.

    memory: optional [K, D] L2-normalised keys of earlier batches (SimCLR v2's MoCo-style
    memory from a momentum encoder): K extra negatives for every anchor, no gradient.

    z1, z2: [N, D] projections of view 1 and view 2 (row i of each comes from image i).
    Each of the 2N views is an anchor with 1 positive (the other view of its image) and 2N - 2
    negatives; its own similarity is removed with -LARGE_NUM.

    Scale: like the reference (`loss_a + loss_b`), the loss is mean CE over view-1 anchors PLUS
    mean CE over view-2 anchors, i.e. twice the mean over all 2N anchors. Gradients (and so the
    effective LR / weight-decay balance of the published hyper-parameters) depend on this.

    Metrics (no gradient), over all 2N anchors and their full masked rows of 2N logits:
      contrast_acc: fraction whose largest logit is the positive. (The TF reference measures
        only view-1 anchors against the N cross-view logits; over both views and 2N - 1
        candidates it is the same quantity in expectation, slightly harder.)
      contrast_entropy: mean entropy of the anchors' softmax.
    Returns (loss [], metrics).
    """
    _check_pair("nt_xent", z1, z2, "z1", "z2")
    n = z1.shape[0]
    z = jnp.concatenate([l2_normalize(z1), l2_normalize(z2)], axis=0)   # [2N, D]
    logits = (z @ z.T) / temperature                                    # [2N, 2N]
    logits = logits - LARGE_NUM * jnp.eye(2 * n, dtype=logits.dtype)    # drop sim(i, i)
    if memory is not None:
        if memory.ndim != 2 or memory.shape[1] != z.shape[1]:
            raise ValueError(f"nt_xent: memory must be [K, D] with D = {z.shape[1]}, "
                             f"got {tuple(memory.shape)}.")
        memory = jax.lax.stop_gradient(memory.astype(jnp.float32))     # [K, D]
        logits = jnp.concatenate([logits, (z @ memory.T) / temperature], axis=1)  # [2N, 2N+K]
    idx = jnp.arange(2 * n)                                             # [2N]
    labels = jnp.where(idx < n, idx + n, idx - n)                       # positive of each anchor
    ce = _cross_entropy_rows(logits, labels)                            # [2N]
    loss = jnp.mean(ce[:n]) + jnp.mean(ce[n:])
    return loss, _row_metrics(logits, labels)


def infonce_queue(q: jnp.ndarray, k: jnp.ndarray, queue: jnp.ndarray, temperature: float):
    """MoCo v1/v2 InfoNCE against a queue of negative keys.

    q: [N, D] queries (online encoder), k: [N, D] keys (momentum encoder), queue: [K, D] keys
    of earlier batches. q and k are L2-normalised here; queue rows are used as stored (the
    method writes normalised keys, as the reference does). Neither k nor queue gets a gradient.
    logits = [q.k, q.queue^T] / T  ([N, 1 + K]), the positive at index 0; loss = mean CE.
    Returns (loss [], metrics with contrast_acc / contrast_entropy).
    """
    _check_pair("infonce_queue", q, k, "q", "k")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"infonce_queue: queue must be [K, D] with D = {q.shape[1]} like q, "
                         f"got queue{tuple(queue.shape)}.")
    q = l2_normalize(q)                                                   # [N, D]
    k = jax.lax.stop_gradient(l2_normalize(k))                            # [N, D]
    queue = jax.lax.stop_gradient(queue.astype(jnp.float32))              # [K, D]
    l_pos = jnp.sum(q * k, axis=-1, keepdims=True)                        # [N, 1]
    l_neg = q @ queue.T                                                   # [N, K]
    logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature        # [N, 1 + K]
    labels = jnp.zeros((q.shape[0],), jnp.int32)                          # [N]
    loss = jnp.mean(_cross_entropy_rows(logits, labels))
    return loss, _row_metrics(logits, labels)


def moco_v3_ctr(q: jnp.ndarray, k: jnp.ndarray, temperature: float):
    """MoCo v3's contrastive term ctr(q, k) = CE(q.k^T / T, labels = arange(N)) * 2T.

    q: [N, D] predictor outputs of one view, k: [N, D] momentum-encoder outputs of the other
    view (stop-gradient). The reference all-gathers k over GPUs; here N is already the global
    batch. The factor 2T is the reference's (`loss * (args.moco_t * 2.)`).
    The symmetric loss ctr(q1, k2) + ctr(q2, k1) is composed by the method.
    Returns (loss [], metrics with contrast_acc / contrast_entropy).
    """
    _check_pair("moco_v3_ctr", q, k, "q", "k")
    q = l2_normalize(q)                                                   # [N, D]
    k = jax.lax.stop_gradient(l2_normalize(k))                            # [N, D]
    logits = (q @ k.T) / temperature                                      # [N, N]
    labels = jnp.arange(q.shape[0])                                       # [N]
    loss = jnp.mean(_cross_entropy_rows(logits, labels)) * (2.0 * temperature)
    return loss, _row_metrics(logits, labels)


def byol_loss(p: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
    """BYOL regression: mean over examples of 2 - 2 cos(p, stop_grad(z)) (= ||p^ - z^||^2).

    p: [N, D] online predictions, z: [N, D] target projections of the other view.
    One direction only; BYOL's symmetrised loss is byol_loss(p1, z2) + byol_loss(p2, z1).
    """
    _check_pair("byol_loss", p, z, "p", "z")
    p = l2_normalize(p)                                                   # [N, D]
    z = jax.lax.stop_gradient(l2_normalize(z))                            # [N, D]
    return jnp.mean(2.0 - 2.0 * jnp.sum(p * z, axis=-1))




def distillation_loss(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                      temperature: float = 1.0) -> jnp.ndarray:
    """SimCLRv2 self-distillation: T^2 * mean_i -sum_c softmax(t_i / T)_c log_softmax(s_i / T)_c.

    student_logits, teacher_logits: [N, C]; the teacher gets no gradient. The T^2 factor is the
    SimCLRv2 distillation colab's (`add_kd_loss`, as Hinton et al.): it keeps the gradient scale
    independent of T; at T = 1 (the default) it changes nothing.
    """
    _check_pair("distillation_loss", student_logits, teacher_logits,
                "student_logits", "teacher_logits")
    t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature   # [N, C]
    s = student_logits.astype(jnp.float32) / temperature                          # [N, C]
    target = jax.nn.softmax(t, axis=-1)                                           # [N, C]
    ce = -jnp.sum(target * jax.nn.log_softmax(s, axis=-1), axis=-1)               # [N]
    return temperature ** 2 * jnp.mean(ce)




def softmax_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                          mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Mean CE with integer labels for probes / classifiers.

    logits [N, C], labels [N] int in [0, C), mask [N] (bool or float weights; padded examples
    get 0 and count neither in the sum nor in the denominator). An all-zero mask gives 0.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"softmax_cross_entropy: expected logits [N, C] and labels [N], got "
                         f"logits{tuple(logits.shape)} and labels{tuple(labels.shape)}.")
    ce = _cross_entropy_rows(logits.astype(jnp.float32), labels.astype(jnp.int32))  # [N]
    if mask is None:
        return jnp.mean(ce)
    mask = mask.astype(jnp.float32)                                      # [N]
    return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def topk_correct(logits: jnp.ndarray, labels: jnp.ndarray, k: int = 1) -> jnp.ndarray:
    """[N] float32: 1 where the label is among the k largest logits (ties: lower index first,
    as lax.top_k). Multiply by a mask and sum to count correct examples."""
    k = min(int(k), logits.shape[-1])
    _, top = jax.lax.top_k(logits.astype(jnp.float32), k)               # [N, k]
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def sinkhorn(scores: jnp.ndarray, epsilon: float, num_iters: int,
             valid: jnp.ndarray | None = None) -> jnp.ndarray:
    """Equipartitioned soft assignments of N examples to K clusters (Sinkhorn-Knopp), no grad.

    scores [N, K] over the GLOBAL batch (and any queued examples): the sums below are global
    sums under jit, as the reference's all_reduce. Q = exp(scores / eps)^T scaled to sum 1, then
    `num_iters` times: rows (clusters) to 1/K each, columns (examples) to 1/N each; the result is
    Q * N transposed, each example's row a distribution over clusters [N, K].
    valid [N] bool (optional): examples that take part; the others get all-zero rows and count
    neither in N nor in any sum (a queue that is not in use yet).
    """
    scores = jax.lax.stop_gradient(scores).astype(jnp.float32)             # [N, K]
    q = jnp.exp(scores / epsilon).T                                        # [K, N]
    n = scores.shape[0]
    if valid is not None:
        q = jnp.where(valid[None, :], q, 0.0)
        n = jnp.sum(valid.astype(jnp.float32))
    k = scores.shape[1]
    q = q / jnp.sum(q)
    for _ in range(num_iters):
        q = q / jnp.sum(q, axis=1, keepdims=True) / k                      # rows: 1/K each
        col = jnp.sum(q, axis=0, keepdims=True)                            # [1, N]
        q = q / jnp.where(col > 0, col, 1.0) / n                           # columns: 1/N each
    return (q * n).T                                                       # [N, K]


def swapped_prediction(scores: jnp.ndarray, codes: jnp.ndarray, code_views, temperature: float):
    """Each view predicts the codes of every other view: scores [V, B, K] (logits of every
    view), codes [A, B, K] (targets, computed from views `code_views[a]`). For each coded view,
    the mean over the other V - 1 views of -mean_b sum_k codes * log_softmax(scores / T), then
    the mean over the A coded views (the reference's loop)."""
    logp = jax.nn.log_softmax(scores.astype(jnp.float32) / temperature, axis=-1)  # [V, B, K]
    codes = jax.lax.stop_gradient(codes).astype(jnp.float32)
    num_views = scores.shape[0]
    loss = 0.0
    for a, v_code in enumerate(code_views):
        ce = -jnp.mean(jnp.sum(codes[a][None] * logp, axis=-1), axis=-1)   # [V]: per predictor
        others = jnp.arange(num_views) != v_code
        loss = loss + jnp.sum(jnp.where(others, ce, 0.0)) / (num_views - 1)
    return loss / len(code_views)


def swapped_prediction_top1(scores: jnp.ndarray, codes: jnp.ndarray, code_views):
    """How often swapped prediction is right, and how often it would be by chance: over the same
    (coded view, other view) pairs as `swapped_prediction`, the fraction of images whose
    top-scoring prototype is their code's argmax, and the fraction expected if predictions and
    codes were independent with the batch's own frequencies (sum_k f_pred(k) f_code(k), Cohen's
    p_e). scores [V, B, K], codes [A, B, K] -> (top1, chance), scalars.

    The pretext task's accuracy (as MoCo's acc@1) rises only as views of one image come to
    agree, but a collapse to one prototype also makes it 1; the chance term is then 1 too, so
    the gap top1 - chance is the learning (a queue much larger than the batch lets the batch
    collapse while the queue keeps the codes' equipartition: BENCHMARKS.md)."""
    num_views, B, K = scores.shape
    predicted = jnp.argmax(scores, axis=-1)                                   # [V, B]

    def freq(ids):          # [B] -> [K]; a count, not a [B, K] one-hot (B 4096 x K 3000)
        return jnp.bincount(ids, length=K) / B

    hits, chance = [], []
    for a, v_code in enumerate(code_views):
        target = jnp.argmax(codes[a], axis=-1)                                # [B]
        target_freq = freq(target)                                            # [K]
        for v in range(num_views):
            if v != v_code:
                hits.append(jnp.mean((predicted[v] == target).astype(jnp.float32)))
                chance.append(jnp.sum(freq(predicted[v]) * target_freq))
    return jnp.mean(jnp.stack(hits)), jnp.mean(jnp.stack(chance))


def grid_prediction_infonce(preds: jnp.ndarray, targets: jnp.ndarray, step: int):
    """InfoNCE of row-ahead predictions on a grid (CPC): preds[b, r, j] predicts
    targets[b, r + step, j] for r < H - step; each prediction is scored (dot product) against
    EVERY target vector of the (global) batch, all images and all positions, its own included,
    and the true one is the positive (the paper's pseudo-code). preds, targets: [B, H, W, D].
    Returns (mean cross-entropy over the B (H - step) W predictions, metrics)."""
    b, h, w, d = targets.shape
    if not 1 <= step < h:
        raise ValueError(f"grid_prediction_infonce: step must be in [1, {h - 1}], got {step}")
    keys = targets.reshape(b * h * w, d)                                  # [BHW, D]
    queries = preds[:, :h - step].reshape(-1, d)                          # [B(H-k)W, D]
    logits = jnp.matmul(queries.astype(jnp.float32), keys.astype(jnp.float32).T)
    bi, ri, ji = jnp.meshgrid(jnp.arange(b), jnp.arange(h - step), jnp.arange(w),
                              indexing="ij")
    labels = ((bi * h + ri + step) * w + ji).reshape(-1)                  # [B(H-k)W]
    loss = jnp.mean(_cross_entropy_rows(logits, labels))
    return loss, _row_metrics(logits, labels)
