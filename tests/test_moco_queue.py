"""MoCo queue (FIFO) and shuffle-BN permutation against plain numpy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.methods.moco import enqueue, group_derangement


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
    queue, ptr, filled = jnp.zeros((K, 3)), jnp.int32(0), jnp.int32(0)
    step = jax.jit(enqueue)
    for keys in batches:
        queue, ptr, filled = step(queue, ptr, filled, jnp.asarray(keys))
    ref_queue, ref_ptr = numpy_fifo(K, 3, batches)
    np.testing.assert_array_equal(np.asarray(queue), ref_queue)
    assert int(ptr) == ref_ptr
    assert int(filled) == min(K, B * steps)


@pytest.mark.parametrize("B,g", [(16, 4), (32, 8), (8, 4), (64, 32)])
def test_group_derangement_moves_every_key_to_another_bn_group(B, g):
    for seed in range(20):
        perm, inverse = group_derangement(jax.random.PRNGKey(seed), B, g)
        perm, inverse = np.asarray(perm), np.asarray(inverse)
        assert sorted(perm.tolist()) == list(range(B)), "must be a permutation"
        # Position p of the shuffled key batch holds example perm[p]; that key is normalised in
        # group p // g, the query of the same example in group perm[p] // g.
        positions = np.arange(B)
        assert np.all(positions // g != perm // g)
        x = np.random.default_rng(seed).normal(size=(B, 5))
        np.testing.assert_array_equal(x[perm][inverse], x)


def test_group_derangement_is_random():
    perms = {tuple(np.asarray(group_derangement(jax.random.PRNGKey(s), 16, 4)[0]))
             for s in range(10)}
    assert len(perms) > 5
