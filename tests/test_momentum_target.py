"""The EMA target: no gradient reaches it, and a step changes it only by the EMA formula."""
import math

import jax
import numpy as np
import pytest
from tiny_configs import random_batch, tiny

from simclr_jax import optim, parallel, train
from simclr_jax.methods import common


def reference_momentum(config, k, total):
    """m_k of the references: constant (MoCo v1/v2) or 1 - (1 - m0) (cos(pi k / K) + 1) / 2."""
    m0 = config.ema.base
    if config.ema.schedule == "constant":
        return m0
    return 1 - (1 - m0) * (math.cos(math.pi * k / total) + 1) / 2


# The momentum of the update after optimizer step 0: BYOL uses tau_0 right after the step;
# MoCo v3 updates the key encoder with m_1 at the start of iteration 1 (main_moco.py computes
# moco_m for iteration i and the model updates before computing keys).
@pytest.mark.parametrize("file,preset,momentum_step", [("moco_v2.py", "cifar10", 0),
                                                       ("byol.py", "cifar10", 0),
                                                       ("moco_v3.py", "cifar10", 1)])
def test_target_gets_no_gradient_and_moves_only_by_ema(file, preset, momentum_step):
    config = tiny(file, preset, batch_size=16, image_size=16)
    mesh = parallel.make_mesh(jax.devices()[:1])
    total = 10
    schedule = optim.make_lr_schedule("constant", peak_lr=0.05, total_steps=total)
    method, network, tx, state, step, ctx = train.build_step(config, mesh, schedule, total)
    # Make the target differ from the online network so the EMA is visible.
    ms = state.method_state
    state = state.replace(method_state={
        **ms, "target_params": jax.tree.map(lambda t: t + 0.01, ms["target_params"])})
    batch = parallel.to_global(mesh, random_batch(16, 16))
    rng = jax.random.PRNGKey(1)

    @jax.jit
    def grad_wrt_target(target_params):
        def loss(tp):
            moved = state.replace(method_state={**state.method_state, "target_params": tp})
            return method.compute_loss(network, config, state.params, moved, batch, rng,
                                       ctx)[0]
        return jax.grad(loss)(target_params)

    for g in jax.tree.leaves(grad_wrt_target(state.method_state["target_params"])):
        assert np.all(np.asarray(g) == 0.0)

    old_target = jax.device_get(state.method_state["target_params"])
    new, metrics = step(state, batch)
    new = jax.device_get(new)
    m = reference_momentum(config, momentum_step, total)
    assert float(metrics["ema_momentum"]) == pytest.approx(m, abs=1e-7)  # the m it applied
    online = common.target_subtree(new.params)
    # Hand computation, leaf by leaf in float64, then compared at float32 precision.
    flat_old, tree = jax.tree.flatten(old_target)
    flat_online = jax.tree.leaves(online)
    flat_new = jax.tree.leaves(new.method_state["target_params"])
    assert len(flat_old) == len(flat_online) == len(flat_new)
    for t0, o, t1 in zip(flat_old, flat_online, flat_new):
        expected = m * np.asarray(t0, np.float64) + (1 - m) * np.asarray(o, np.float64)
        np.testing.assert_allclose(np.asarray(t1), expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(flat_new[0], flat_old[0])    # it did move
