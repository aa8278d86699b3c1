"""One train step on 8 devices equals the same step on 1 device, for every method.

This is the test of global negatives and cross-replica BN: the loss is written over the global
batch and XLA must insert the collectives, so the sharded step must match the unsharded one.
"""
import golden_numerics
import jax
import numpy as np
import pytest
from tiny_configs import random_batch, tiny

from simclr_jax import optim, parallel, train

# tests/golden/pre_plugin_parity.json: the one-device runs below as the code before the method
# plug-in ran them (its train.py's optimizer), see tests/golden_numerics.py.
PARITY_GOLDEN = golden_numerics.load("pre_plugin_parity.json")

# (config file, preset, peak LR of the 2-step schedule)
CASES = [("quickstart.py", None, 0.5),
         # MoCo v1 with torchvision init (no zero-init residual) is chaotic at 0.5 too: on ONE
         # device, adding N(0, 1e-6) noise to the inputs moved a BN parameter by 1.1e-3 after
         # two steps, the size of the 8-vs-1 difference (1.3e-3); at 0.1 both are ~1e-6.
         ("moco_v1.py", "cifar10", 0.1),
         ("moco_v2.py", "cifar10", 0.5), ("moco_v3.py", "cifar10", 0.5),
         ("byol.py", "cifar10", 0.5),
         # SimCLR v2's memory runs at a lower LR: at 0.5 this tiny LARS net is chaotic. On ONE
         # device, perturbing the input by 1e-6 (relative) moved a BN bias by 1.4e-3 after two
         # steps, the same size as the 8-vs-1 difference (1.2e-3); at 0.1 both fall to ~2e-5
         # and ~2e-6, so the comparison below can again tell a real difference from rounding.
         ("simclr_v2.py", "cifar10_memory", 0.1)]


def run_steps(config, devices, batches, peak_lr=0.5):
    mesh = parallel.make_mesh(devices)
    total = 10
    schedule = optim.make_lr_schedule("cosine", peak_lr=peak_lr, total_steps=total, warmup_steps=0,
                                      boundaries=(), steps_per_epoch=1)
    _, _, _, state, step, _ = train.build_step(config, mesh, schedule, total)
    losses, emas = [], []
    for b in batches:
        state, metrics = step(state, parallel.to_global(mesh, b))
        losses.append(float(metrics["loss"]))
        emas.append(float(metrics.get("ema_momentum", -1.0)))
    return jax.device_get(state), losses, emas


@pytest.mark.parametrize("file,preset,peak_lr", CASES)
def test_eight_devices_equal_one_device(file, preset, peak_lr):
    config = tiny(file, preset, batch_size=16, image_size=16)
    batches = [random_batch(16, 16, seed=s) for s in range(2)]
    s8, l8, _ = run_steps(config, jax.devices(), batches, peak_lr)
    s1, l1, e1 = run_steps(config, jax.devices()[:1], batches, peak_lr)
    # The one-device run is also the run of the code before the method plug-in (a47d48a).
    golden_numerics.assert_matches(PARITY_GOLDEN[f"{file}:{preset}"], s1, l1, e1)
    assert len(jax.devices()) == 8
    np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-6)
    for name in ("params", "batch_stats", "method_state"):
        a, b = getattr(s8, name), getattr(s1, name)
        if not a:
            continue
        # Float reduction order differs between 8 and 1 devices and two steps through small-
        # batch BN amplify it (seen: up to 7e-5 on O(0.1) parameters). Per-device BN or
        # per-device negatives change parameters by >1e-2.
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=2e-4,
                                                             err_msg=name), a, b)
    assert int(s8.step) == 2
