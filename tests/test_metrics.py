"""The logged loss is the method's own loss (comparable with the references), the probe apart."""
import jax
import numpy as np
from tiny_configs import random_batch, tiny

from simclr_jax import optim, parallel, train


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def reference_nt_xent(z1, z2, temperature):
    """SimCLR tf2 `add_contrastive_loss`, transcribed: per direction, the positive is the other
    view of the same image, the negatives every other view; the two directions' means add up."""
    h1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    h2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    n = len(h1)
    total = 0.0
    for a, b in ((h1, h2), (h2, h1)):
        logits_ab = a @ b.T / temperature
        logits_aa = a @ a.T / temperature - 1e9 * np.eye(n)
        logp = _log_softmax(np.concatenate([logits_ab, logits_aa], axis=1))
        total += -np.mean(logp[np.arange(n), np.arange(n)])
    return total


def test_logged_loss_is_the_method_loss_and_total_adds_the_probe():
    config = tiny("quickstart.py", batch_size=8, image_size=16)
    mesh = parallel.make_mesh(jax.devices()[:1])
    _, network, _, state, step, _ = train.build_step(config, mesh, lambda _: 0.1, 10)
    batch = random_batch(8, 16, seed=3)
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    _, metrics = step(state, parallel.to_global(mesh, batch))

    x = np.concatenate([batch["view1"], batch["view2"]])             # [2B, S, S, 3]
    out, _ = network.apply(variables, x, train=True, mutable=["batch_stats"])
    z1, z2 = np.split(np.asarray(out["proj"], np.float64), 2)
    want = reference_nt_xent(z1, z2, config.loss.temperature)
    np.testing.assert_allclose(float(metrics["loss"]), want, rtol=2e-5)

    labels = np.tile(batch["label"], 2)
    logp = _log_softmax(np.asarray(out["probe_logits"], np.float64))
    probe = -np.mean(logp[np.arange(len(labels)), labels])
    np.testing.assert_allclose(float(metrics["probe_loss"]), probe, rtol=2e-5)
    np.testing.assert_allclose(float(metrics["total_loss"]), want + probe, rtol=2e-5)
