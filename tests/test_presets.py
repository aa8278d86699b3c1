"""Every preset of every config file builds, validates and runs 2 real train steps (tiny backbone).

tests/test_train_step_parity.py runs one preset per method on 8 devices against 1, and
tests/test_trainer.py runs whole jobs (data, eval, checkpoints).
"""
import jax
import numpy as np
import pytest
from tiny_configs import config_batch, tiny

from simclr_jax import optim, parallel, train
from simclr_jax.config_validation import validate_config

PRESETS = [("quickstart.py", None)]
for file, names in {
        "simclr_v1.py": ("cifar10", "cifar10_folder", "imagenet", "imagenet_2x", "imagenet_4x"),
        "simclr_v2.py": ("r50_1x", "r50_1x_sk", "r152_3x_sk", "cifar10", "r50_1x_memory",
                         "cifar10_memory"),
        "moco_v1.py": ("imagenet_200ep", "cifar10"),
        "moco_v2.py": ("imagenet_200ep", "imagenet_800ep", "cifar10", "cifar10_colab",
                       "cifar10_colab_symmetric"),
        "moco_v3.py": ("r50_100ep", "r50_300ep", "r50_1000ep", "vit_small", "vit_base",
                       "cifar10"),
        "byol.py": ("imagenet_300ep", "imagenet_1000ep", "cifar10"),
        "simsiam.py": ("imagenet_100ep", "cifar10"),
        "swav.py": ("imagenet_100ep", "imagenet_200ep", "imagenet_400ep", "imagenet_800ep",
                    "imagenet_bs256_200ep", "imagenet_bs256_400ep", "cifar10"),
        # The shrunk step sees random batches (no augmentation) and ResNet-10: presets that
        # differ only in augmentation or depth (invaspread cifar10_paper, instdisc imagenet_r18,
        # cifar10_nce = imagenet_r50's loss) compile the same program and are left out here;
        # their values are tested in tests/test_invaspread.py and tests/test_instdisc.py.
        "invaspread.py": ("cifar10",),
        "instdisc.py": ("imagenet_r50", "imagenet_r50_softmax65536", "cifar10"),
        # cpc_v2 cifar10 shrunk differs from imagenet_r50 only in augmentation values (same
        # program on random batches); its values are tested in tests/test_cpc_v2.py.
        "cpc_v2.py": ("imagenet_r50", "imagenet_r161"),
        # vit_base and resnet50 are validated and their values tested in tests/test_dino.py.
        "dino.py": ("vit_small", "cifar10")}.items():
    PRESETS += [(file, name) for name in names]


def structure(node):
    """A config with every number replaced by its type: presets of one structure (e.g. MoCo v3's
    100/300/1000-epoch ResNet presets) differ only in values, and shrunk they build the same
    program, so only the first of each is compiled and stepped below."""
    if hasattr(node, "items"):
        return tuple(sorted((k, structure(v)) for k, v in node.items()))
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return type(node).__name__
    if isinstance(node, (list, tuple)):
        return ("sequence", len(node))
    return node


def _first_of_each_structure(presets):
    firsts = {}
    for file, preset in presets:
        firsts.setdefault(structure(tiny(file, preset).to_dict()), (file, preset))
    return list(firsts.values())


# Shrunk the same way (tiny_configs.tiny), these presets' training steps run in
# tests/test_multiprocess.py's every-method test (on 2 x 2 and 1 x 4 devices) or, for SimSiam
# and InvaSpread, in tests/test_trainer.py's resume test, so they are not stepped again here
# (CPC v2: its cifar10 step there; ResNet-161's layout and count are tests/test_cpc_v2.py's).
STEPPED_ELSEWHERE = {("moco_v2.py", "cifar10"), ("simsiam.py", "cifar10"),
                     ("invaspread.py", "cifar10"), ("instdisc.py", "cifar10"),
                     ("swav.py", "cifar10"), ("dino.py", "cifar10"),
                     ("cpc_v2.py", "imagenet_r50"), ("cpc_v2.py", "imagenet_r161")}
STEPPED = [p for p in _first_of_each_structure(PRESETS) if p not in STEPPED_ELSEWHERE]


@pytest.mark.parametrize("file,preset", PRESETS)
def test_every_preset_validates_shrunk(file, preset):
    """Every preset, also those of a structure stepped below under another preset's name."""
    validate_config(tiny(file, preset, batch_size=8, image_size=16))


@pytest.mark.parametrize("file,preset", STEPPED)
def test_preset_builds_and_runs_two_steps(file, preset):
    """The preset's own recipe (method, head, optimizer, schedules, EMA, queue, augmentation
    settings) with only the backbone and sizes shrunk, compiled and stepped twice on one device
    (tests/test_train_step_parity.py covers 8 devices against 1)."""
    config = tiny(file, preset, batch_size=8, image_size=16)
    validate_config(config)
    mesh = parallel.make_mesh(jax.devices()[:1])
    schedule = optim.make_lr_schedule(config.lr_schedule, peak_lr=0.1, total_steps=100,
                                      warmup_steps=0,
                                      boundaries=tuple(config.lr_boundaries_epochs),
                                      steps_per_epoch=1)
    method, _, _, state, step, ctx = train.build_step(config, mesh, schedule, 100,
                                                      num_train_examples=1438)
    method.validate(config, ctx)
    before = jax.device_get(state.params)
    losses = []
    for seed in range(2):
        state, metrics = step(state, parallel.to_global(mesh, config_batch(config, 8, seed)))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 2
    assert np.all(np.isfinite(losses)), losses
    after = jax.device_get(state.params)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after))
    assert sum(moved) > len(moved) // 2, f"only {sum(moved)}/{len(moved)} parameters moved"
    if config.model.get("stop_grad_patch_embed"):   # MoCo v3's frozen random patch projection
        b, a = before["backbone"], after["backbone"]
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(b["patch_embed"][name], a["patch_embed"][name])
        assert not np.allclose(b["cls_token"], a["cls_token"])


RECIPE = ("method", "optimizer", "loss", "ema", "aug", "lr_schedule", "seed")


@pytest.mark.parametrize("file,preset", PRESETS)
def test_runlocal_keeps_the_recipe_and_shrinks_the_rest(file, preset):
    """`--config file.py:preset,runlocal`: the preset's recipe, the digits at 16 px, a small
    backbone and 20 steps (what users try on a laptop and the tests build on)."""
    from simclr_jax.config_base import load_config_file
    from tiny_configs import ROOT
    path = f"{ROOT}/configs/{file}"
    full = load_config_file(path, preset)
    local = load_config_file(path, f"{preset},runlocal" if preset else "runlocal")
    for key in RECIPE:   # multi-crop's small views shrink with the images
        assert without_view_sizes(local[key]) == without_view_sizes(full[key]), key
    assert (local.dataset.name, local.dataset.image_size, local.num_steps) == ("digits", 16, 20)
    if full.model.name == "resnet":
        assert local.model.depth in (10, 14) and local.model.width == 0.125
    assert full.dataset.name != "digits" or full.dataset.image_size != 16   # the preset is intact


def without_view_sizes(node):
    if hasattr(node, "items"):
        return {k: without_view_sizes(v) for k, v in node.items() if k != "image_size"}
    return node


def test_unknown_preset_is_one_clear_error():
    from simclr_jax.config_base import load_config_file
    from simclr_jax.errors import UserError
    from tiny_configs import ROOT
    with pytest.raises(UserError, match="unknown preset 'cifar100' for byol.py; valid: "
                                        "imagenet_300ep, imagenet_1000ep, cifar10"):
        load_config_file(f"{ROOT}/configs/byol.py", "cifar100,runlocal")
    with pytest.raises(UserError, match="for quickstart.py; valid: none"):
        load_config_file(f"{ROOT}/configs/quickstart.py", "cifar10")


@pytest.mark.parametrize("key,value,message", [
    ("view2.brightness_mode", "additve", "aug.view2.brightness_mode='additve': use"),
    ("view1.resize_method", "cubic", "aug.view1.resize_method='cubic': use one of bicubic"),
    ("view1.normalize", "cifar100", "aug.view1.normalize='cifar100'; use one of"),
    ("view1.blur_prob", 1.5, r"aug.view1.blur_prob=1.5 is a probability"),
    ("view2.crop_area_min", 0.0, r"aug.view2.crop_area_min/max=\(0.0, 1.0\)"),
    ("view1.hue", 0.7, r"aug.view1.hue=0.7: give a value in \[0, 0.5\]"),
])
def test_bad_augmentation_override_is_one_line_before_any_work(key, value, message):
    """A typo given as --config.aug.<view>.<field>=... used to fail inside the TF graph build."""
    from simclr_jax.errors import UserError
    config = tiny("byol.py", "cifar10", batch_size=8, image_size=16)
    view, field = key.split(".")
    config.aug[view][field] = value
    with pytest.raises(UserError, match=message):
        validate_config(config)


def test_a_negative_init_bn_batches_is_one_line_before_any_work():
    from simclr_jax.errors import UserError
    config = tiny("byol.py", "cifar10", batch_size=8, image_size=16)
    config.eval.init_bn_batches = -1
    with pytest.raises(UserError, match=r"eval.init_bn_batches must be >= 0 \(0: score"):
        validate_config(config)
