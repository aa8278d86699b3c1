"""Export round trip: the loaded encoder gives the trainer's encoder features."""
import jax
import numpy as np
from tiny_configs import tiny

import simclr_jax
from simclr_jax import checkpoint, train
from simclr_jax.data import embedded
from simclr_jax.export import export_encoder
from simclr_jax.methods import get_method


def test_load_encoder_matches_trainer_features(tmp_path):
    config = tiny(steps=2, image_size=32)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)

    images, _ = embedded.digits_arrays()                      # uint8 [N, 32, 32, 3]
    images = images[:16]
    # Reference: the network exactly as the trainer built it, on the checkpoint's arrays.
    arrays = checkpoint.restore_arrays(workdir)
    network = get_method(config.method).build_network(config, num_classes=10)
    x = images.astype(np.float32) / 255.0
    ref = network.apply({"params": arrays["params"], "batch_stats": arrays["batch_stats"]}, x,
                        train=False)["features"]                  # the online backbone's

    encoder = simclr_jax.load_encoder(workdir)
    np.testing.assert_allclose(np.asarray(encoder(images)), np.asarray(ref), rtol=1e-5,
                               atol=1e-5)
    assert encoder(images).shape == (16, encoder.module.num_features)

    out = export_encoder(workdir, str(tmp_path / "exported"))
    again = simclr_jax.load_encoder(out)
    np.testing.assert_allclose(np.asarray(again(images)), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # The features are not trivially constant: different digits give different features.
    assert np.std(np.asarray(ref), axis=0).mean() > 0
    assert jax.tree.leaves(again.variables)


def test_checkpoint_from_8_devices_loads_on_1_device(tmp_path):
    """Pretrain on a pod, evaluate on a laptop: restore ignores the writer's device topology."""
    import os
    import subprocess
    import sys

    from conftest import TEST_XLA_FLAGS
    from tiny_configs import ROOT

    config = tiny(steps=1, image_size=16)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    images = embedded.digits_arrays()[0][:8]
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "ref.npy", np.asarray(simclr_jax.load_encoder(workdir)(images)))
    code = ("import numpy as np, jax, simclr_jax, sys; assert jax.device_count() == 1; "
            f"e = simclr_jax.load_encoder({workdir!r}); "
            f"f = np.asarray(e(np.load({str(tmp_path / 'images.npy')!r}))); "
            f"np.testing.assert_allclose(f, np.load({str(tmp_path / 'ref.npy')!r}), "
            "rtol=1e-5, atol=1e-5); print('ok')")
    flags = TEST_XLA_FLAGS.replace("device_count=8", "device_count=1")
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
