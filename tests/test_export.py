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
                        method=type(network).encode)

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
