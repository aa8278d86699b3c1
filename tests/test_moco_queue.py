"""MoCo queue (FIFO) against a numpy ring buffer; shuffle BN and the symmetric loss by the
properties the references need."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import random_batch, tiny

from simclr_jax import parallel, train
from simclr_jax.methods import get_method
from simclr_jax.methods.moco import batch_shuffle, enqueue


def numpy_fifo(K, D, key_batches):
    """Reference: a ring buffer written batch by batch with an explicit loop."""
    queue = np.zeros((K, D), np.float32)
    ptr = 0
    for keys in key_batches:
        for row in keys:
            queue[ptr] = row
            ptr = (ptr + 1) % K
    return queue, ptr


@pytest.mark.parametrize("K,B,steps", [(8, 4, 5), (12, 4, 3), (16, 8, 7)])
def test_enqueue_matches_numpy_fifo_with_wraparound(K, B, steps):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(B, 3)).astype(np.float32) for _ in range(steps)]
    state = {"queue": jnp.zeros((K, 3)), "queue_ptr": jnp.int32(0),
             "queue_filled": jnp.int32(0)}
    step = jax.jit(enqueue)
    for keys in batches:
        state = step(state, jnp.asarray(keys))
    ref_queue, ref_ptr = numpy_fifo(K, 3, batches)
    np.testing.assert_array_equal(np.asarray(state["queue"]), ref_queue)
    assert int(state["queue_ptr"]) == ref_ptr
    assert int(state["queue_filled"]) == min(K, B * steps)


# ----------------------------------------------------------------------------- shuffle BN

B, S = 16, 8     # tiny batch of 8 px images; BN groups of 4 (the shrunk presets' group size)


def _moco(group_size, **moco):
    """A tiny MoCo v2 config, network and initial state on one device."""
    config = tiny("moco_v2.py", "cifar10", batch_size=B, image_size=S)
    config.unlock()
    config.model.bn_group_size = group_size
    for name, value in moco.items():
        config.moco[name] = value
    config.lock()
    _, network, _, state, _, _ = train.build_step(config, parallel.make_mesh(jax.devices()[:1]),
                                                  lambda _: 0.1, total_steps=10)
    return config, network, state


def _keys_and_loss(config, network, state, batch, seed=1):
    """The keys the step enqueues (rows [0, n) of the new queue) and its contrastive loss."""
    def f(state, batch):
        _, (_, method_state, metrics) = get_method("moco").compute_loss(
            network, config, state.params, state, batch, jax.random.PRNGKey(seed), None)
        return method_state["queue"], metrics["loss"]
    queue, loss = jax.jit(f)(state, jax.tree.map(jnp.asarray, batch))
    return np.asarray(queue), float(loss)


@pytest.fixture(scope="module")
def group_bn_moco():
    return _moco(4, shuffle_bn=True)


def test_shuffle_bn_keys_are_normalised_by_other_examples_than_their_queries(group_bn_moco):
    """The property shuffle BN exists for: with BN over groups, the statistics that normalise the
    key of image i must not be those of the group its query is normalised in. Keys computed with
    the shuffle must therefore differ from keys computed in the query's grouping (moving whole
    groups to other slots, the old implementation, gave the same keys to 1e-6)."""
    config, network, state = group_bn_moco
    batch = random_batch(B, S)
    plain = config.copy_and_resolve_references()
    plain.moco.shuffle_bn = False
    shuffled_keys, _ = _keys_and_loss(config, network, state, batch)
    grouped_keys, _ = _keys_and_loss(plain, network, state, batch)
    rel = (np.linalg.norm(shuffled_keys[:B] - grouped_keys[:B], axis=1)
           / np.linalg.norm(grouped_keys[:B], axis=1))                     # [B]
    assert np.median(rel) > 0.05, rel
    # Different steps draw different permutations (a function of the step rng).
    other_keys, _ = _keys_and_loss(config, network, state, batch, seed=2)
    assert not np.allclose(other_keys[:B], shuffled_keys[:B], atol=1e-4)


def test_shuffle_is_undone_exactly_under_global_bn():
    """With one BN group the order cannot matter: shuffled keys come back in the right rows."""
    config, network, state = _moco(None, shuffle_bn=True)
    plain = config.copy_and_resolve_references()
    plain.moco.shuffle_bn = False
    batch = random_batch(B, S)
    shuffled_keys, shuffled_loss = _keys_and_loss(config, network, state, batch)
    plain_keys, plain_loss = _keys_and_loss(plain, network, state, batch)
    np.testing.assert_allclose(shuffled_keys, plain_keys, atol=2e-6)
    assert shuffled_loss == pytest.approx(plain_loss, rel=1e-5)


def test_batch_shuffle_is_uniform_over_the_whole_batch():
    """Every example reaches every position (so every BN group) about equally often, including
    its own query's group (probability g/B), like torch.randperm over all GPUs."""
    g, draws = 4, 400
    counts = np.zeros((B, B))
    for seed in range(draws):
        perm, inverse = batch_shuffle(jax.random.PRNGKey(seed), B)
        perm, inverse = np.asarray(perm), np.asarray(inverse)
        counts[np.arange(B), perm] += 1                     # position p holds example perm[p]
        x = np.arange(B)
        np.testing.assert_array_equal(x[perm][inverse], x)
    assert counts.min() > 5 and counts.max() < 55           # expected 25 per (position, example)
    same_group = sum(counts[p, e] for p in range(B) for e in range(B) if p // g == e // g)
    assert same_group / (B * draws) == pytest.approx(g / B, abs=0.05)


def test_symmetric_loss_is_both_directions_and_queues_both_views(group_bn_moco):
    """The colab's symmetric option: loss = loss(q1, k2) + loss(q2, k1) against the same queue,
    then keys [k1; k2] are enqueued (compared with two asymmetric steps, views swapped)."""
    config, network, state = group_bn_moco
    asym = config.copy_and_resolve_references()
    asym.moco.shuffle_bn = False
    sym = asym.copy_and_resolve_references()
    sym.moco.symmetric = True
    batch = random_batch(B, S)
    swapped = {**batch, "view1": batch["view2"], "view2": batch["view1"]}
    q_sym, l_sym = _keys_and_loss(sym, network, state, batch)
    q_12, l_12 = _keys_and_loss(asym, network, state, batch)
    q_21, l_21 = _keys_and_loss(asym, network, state, swapped)
    assert l_sym == pytest.approx(l_12 + l_21, rel=1e-5)
    np.testing.assert_allclose(q_sym[:B], q_21[:B], atol=2e-6)             # k1
    np.testing.assert_allclose(q_sym[B:2 * B], q_12[:B], atol=2e-6)        # k2
    np.testing.assert_allclose(q_sym[2 * B:], np.asarray(state.method_state["queue"])[2 * B:])


def test_symmetric_queue_must_hold_whole_steps_of_keys():
    config = tiny("moco_v2.py", "cifar10", batch_size=B, image_size=S)
    config.unlock()
    config.moco.symmetric, config.moco.queue_size = True, 3 * B
    with pytest.raises(ValueError, match="multiple of 2 x batch_size=32"):
        get_method("moco").validate(config, train.make_context(config, 1000))
