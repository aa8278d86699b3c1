"""The negative control of the learning checks (simclr_jax/negative_control.py): with
`break_positive_pairs` no row of the batch a method sees keeps two views, or a view and its
memory-bank row, of one image, and nothing is lost."""
import numpy as np
import pytest
from tiny_configs import tiny

from simclr_jax import train
from simclr_jax.config_validation import validate_config
from simclr_jax.data import aug_presets
from simclr_jax.errors import UserError
from simclr_jax.negative_control import break_positive_pairs


@pytest.mark.parametrize("V,B", [(1, 2), (2, 3), (10, 16)])
def test_no_row_keeps_a_pair_and_every_image_stays(V, B):
    ids = np.random.default_rng(V).permutation(100)[:B]              # [B] image ids
    names = [f"view{v + 1}" for v in range(V)]
    batch = {name: np.broadcast_to(ids[:, None, None, None], (B, 2, 2, 3)).astype(np.float32)
             for name in names}
    batch["index"] = ids.astype(np.int32)
    out = break_positive_pairs(batch, names)
    rows = np.stack([np.asarray(out[n])[:, 0, 0, 0] for n in names]
                    + [np.asarray(out["index"])], axis=1)            # [B, V + 1] image ids
    for row in rows:
        assert len(set(row.tolist())) == V + 1, row                   # no pair in any row
    for column in rows.T:
        assert sorted(column.tolist()) == sorted(ids.tolist())       # a permutation


def still_views(config):
    """Both views the whole image, nothing random: every positive pair is one image twice."""
    config.unlock()
    for name in aug_presets.view_names(config.aug):
        config.aug[name] = aug_presets.view(
            crop_area_min=1.0, crop_area_max=1.0, flip_prob=0.0, jitter_prob=0.0,
            grayscale_prob=0.0, blur_prob=0.0, normalize=config.aug[name].normalize)
    return config


def test_the_step_sees_no_positive_pair(tmp_path):
    """SimCLR at init on two views that are the whole image: each row's positive is the image
    itself (cosine 1). Broken, the positive is another image and the image's own copy sits among
    the negatives (view2 of the next row): the NT-Xent of the first step rises by far more than
    the spread of a random ResNet's similarities allows (measured 3.50 -> 7.49)."""
    losses = {}
    for broken in (False, True):
        config = still_views(tiny("quickstart.py", steps=1))
        config.break_positive_pairs = broken
        losses[broken] = train.train_and_evaluate(config, str(tmp_path / str(broken)))["loss"]
    print(losses)
    assert losses[True] > losses[False] + 2.0, losses


def test_a_batch_too_small_to_break_every_pair_is_one_line():
    config = tiny("quickstart.py")
    config.unlock()
    config.break_positive_pairs, config.batch_size = True, 2
    with pytest.raises(UserError, match="batch_size=2 must exceed the 2 views"):
        validate_config(config)
