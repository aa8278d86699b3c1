"""DINO against facebookresearch/dino (main_dino.py's DINOLoss and schedules, utils.py's
cosine_scheduler, vision_transformer.py's DINOHead), and its presets against the README's
commands and solo-learn's CIFAR recipe."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_optim import cosine_scheduler
from tiny_configs import load_config, tiny

from simclr_jax import checkpoint, optim, train
from simclr_jax.data import sources
from simclr_jax.errors import UserError
from simclr_jax.data.aug_presets import view_names
from simclr_jax.methods import common, get_method
from simclr_jax.methods.dino import (DINOHead, dino_loss, last_layer_frozen_steps,
                                     size_groups, teacher_temperature, update_center)

torch = pytest.importorskip("torch")
F = torch.nn.functional


# ----------------------------------------------------------------------------- loss and centre

class ReferenceDINOLoss:
    """main_dino.py's DINOLoss.forward / update_center on one process (world size 1)."""

    def __init__(self, center, ncrops, temps, student_temp=0.1, center_momentum=0.9):
        self.center, self.ncrops, self.temps = torch.tensor(center), ncrops, temps
        self.student_temp, self.center_momentum = student_temp, center_momentum

    def __call__(self, student_output, teacher_output, epoch):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        temp = self.temps[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1).detach().chunk(2)
        total_loss, n_loss_terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
        self.center = (self.center * self.center_momentum
                       + batch_center * (1 - self.center_momentum))
        return total_loss


@pytest.mark.parametrize("ncrops", [2, 5])
def test_loss_and_centre_update_equal_the_reference(ncrops):
    """Random outputs of 2 global + (ncrops - 2) local crops, a non-zero centre, epoch 3 of a
    teacher-temperature warmup: the loss, the skipped (v == iq) pairs, the new centre and the
    gradient (none through the teacher) all as DINOLoss."""
    rng = np.random.default_rng(0)
    b, k = 6, 32
    student = (rng.normal(size=(ncrops * b, k)) * 3).astype(np.float32)   # [V*B, K]
    teacher = (rng.normal(size=(2 * b, k)) * 3).astype(np.float32)        # [2B, K]
    center = rng.normal(size=(1, k)).astype(np.float32)
    temps = np.concatenate((np.linspace(0.04, 0.07, 10), np.ones(5) * 0.07))
    ref = ReferenceDINOLoss(center, ncrops, temps)
    s_t = torch.tensor(student, requires_grad=True)
    want = ref(s_t, torch.tensor(teacher), epoch=3)
    want.backward()

    temp = teacher_temperature(3, 0.04, 0.07, 10)
    loss_fn = lambda s, t: dino_loss(s.reshape(ncrops, b, k), t.reshape(2, b, k),  # noqa: E731
                                     center, 0.1, temp)
    got, (g_s, g_t) = jax.value_and_grad(loss_fn, argnums=(0, 1))(student, teacher)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    np.testing.assert_allclose(np.asarray(g_s), s_t.grad.numpy(), rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(g_t) == 0)
    new_center = update_center(center, teacher.reshape(2, b, k), 0.9)
    np.testing.assert_allclose(np.asarray(new_center), ref.center.numpy(), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("warmup,temp,nepochs", [(30, 0.07, 40), (0, 0.04, 5), (1, 0.07, 4)])
def test_teacher_temperature_equals_the_reference_per_epoch(warmup, temp, nepochs):
    want = np.concatenate((np.linspace(0.04, temp, warmup), np.ones(nepochs - warmup) * temp))
    got = [float(teacher_temperature(e, 0.04, temp, warmup)) for e in range(nepochs)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_lr_weight_decay_and_momentum_schedules_equal_cosine_scheduler():
    """vit_small's schedules over 12 epochs of 5 steps, as train.py builds them, against
    main_dino.py's three utils.cosine_scheduler arrays (LR x B/256 with a 10-epoch warmup to
    min_lr 1e-6; weight decay 0.04 -> 0.4; momentum 0.996 -> 1)."""
    c = load_config("dino.py", "vit_small")
    c.num_epochs, niter = 12.0, 5
    n = c.batch_size * niter
    total, warmup, lr = train.make_schedules(c, n)
    assert (total, warmup) == (60, 50)
    steps = np.arange(total)
    want_lr = cosine_scheduler(0.0005 * 1024 / 256, 1e-6, 12, niter, warmup_epochs=10)
    np.testing.assert_allclose([float(lr(s)) for s in steps], want_lr, rtol=2e-6, atol=1e-10)
    wd = optim.weight_decay_schedule(c.optimizer, total)
    np.testing.assert_allclose([float(wd(s)) for s in steps],
                               cosine_scheduler(0.04, 0.4, 12, niter), rtol=2e-6)
    m = [float(common.ema_momentum(c, s, total)) for s in steps]
    np.testing.assert_allclose(m, cosine_scheduler(0.996, 1, 12, niter), rtol=1e-7)


# ----------------------------------------------------------------------------- head

@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_head_equals_the_reference_dinohead(norm_last_layer):
    """vision_transformer.py's DINOHead (3 layers, GELU, L2 normalisation, weight_norm'd last
    layer with g filled with 1) holding our weights computes our function; g is a parameter only
    without norm_last_layer."""
    d_in, hid, bott, k = 12, 16, 8, 24
    head = DINOHead(hidden_dim=hid, bottleneck_dim=bott, out_dim=k, num_layers=3,
                    norm_last_layer=norm_last_layer)
    x = np.random.default_rng(0).normal(size=(5, d_in)).astype(np.float32)
    params = head.init(jax.random.PRNGKey(0), x)["params"]
    assert ("scale" in params["last_layer"]) == (not norm_last_layer)
    p = jax.tree.map(lambda a: torch.tensor(np.asarray(a)), params)
    mlp = torch.nn.Sequential(torch.nn.Linear(d_in, hid), torch.nn.GELU(),
                              torch.nn.Linear(hid, hid), torch.nn.GELU(),
                              torch.nn.Linear(hid, bott))
    with torch.no_grad():
        for i, layer in zip(range(3), (mlp[0], mlp[2], mlp[4])):
            layer.weight.copy_(p[f"dense{i}"]["kernel"].T)
            layer.bias.copy_(p[f"dense{i}"]["bias"])
        last = torch.nn.utils.weight_norm(torch.nn.Linear(bott, k, bias=False))
        last.weight_v.copy_(p["last_layer"]["kernel"].T)
        last.weight_g.fill_(1)
        if not norm_last_layer:
            last.weight_g.copy_(p["last_layer"]["scale"].T * 1.5)
            params["last_layer"]["scale"] = params["last_layer"]["scale"] * 1.5
        want = last(F.normalize(mlp(torch.tensor(x)), dim=-1, p=2)).numpy()
    got = head.apply({"params": params}, x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    # 2-D g, like torch's weight_g [out, 1]: get_params_groups regularizes it, and so do we
    assert optim.weight_decay_mask(params)["last_layer"].get("scale", True)


# ----------------------------------------------------------------------------- presets

def test_vit_small_preset_is_the_readme_boost_command():
    c = load_config("dino.py", "vit_small")
    assert c.method == "dino"
    assert (c.model.name, c.model.variant, c.model.patch_size, c.model.num_heads) == (
        "vit", "small", 16, 6)                                  # DeiT-S = ViT-S/16, 6 heads
    assert c.model.pos_embed == "learned" and c.model.drop_path_rate == 0.1
    assert c.batch_size == 1024 and c.num_epochs == 300       # 16 GPUs x 64, --epochs 300
    assert (c.dino.teacher_temp, c.dino.warmup_teacher_temp,
            c.dino.warmup_teacher_temp_epochs) == (0.07, 0.04, 30)
    assert c.dino.norm_last_layer is False                    # --norm_last_layer false
    assert (c.dino.out_dim, c.dino.hidden_dim, c.dino.bottleneck_dim, c.dino.num_layers) == (
        65536, 2048, 256, 3)
    assert (c.dino.student_temp, c.dino.center_momentum, c.dino.freeze_last_layer) == (
        0.1, 0.9, 1.0)
    assert (c.ema.base, c.ema.schedule) == (0.996, "cosine")
    o = c.optimizer
    assert (o.name, o.base_lr, o.lr_scaling, o.weight_decay, o.weight_decay_end) == (
        "adamw", 0.0005, "linear", 0.04, 0.4)
    assert (o.b1, o.b2, o.eps, o.decay_all, o.grad_clip_per_param) == (
        0.9, 0.999, 1e-8, False, 3.0)
    assert o.grad_clip_norm is None
    assert (c.lr_schedule, c.lr_final, c.warmup_epochs) == ("linspace_warmup_cosine", 1e-6, 10)
    assert (c.eval.knn_k, c.eval.knn_temperature) == (20, 0.07)   # eval_knn.py, 20-NN
    check_multi_crop(c, (0.4, 1.0), (0.05, 0.4))


def check_multi_crop(c, global_scale, local_scale):
    """DataAugmentationDINO: 2 global crops at 224 then 8 local at 96, bicubic, flip 0.5,
    jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2 after it; blur 1.0 / 0.1 + solarize 0.2 /
    0.5; ImageNet normalisation."""
    names = view_names(c.aug)
    assert len(names) == 10 and c.dataset.image_size == 224
    for i, name in enumerate(names):
        v = c.aug[name]
        assert (v.brightness, v.contrast, v.saturation, v.hue, v.jitter_prob) == (
            0.4, 0.4, 0.2, 0.1, 0.8)
        assert (v.grayscale_prob, v.grayscale_first, v.flip_prob) == (0.2, False, 0.5)
        assert (v.resize_method, v.brightness_mode, v.normalize) == (
            "bicubic", "multiplicative", "imagenet")
        assert (v.blur_sigma_min, v.blur_sigma_max) == (0.1, 2.0)
        scale = global_scale if i < 2 else local_scale
        assert (v.crop_area_min, v.crop_area_max) == scale
        assert v.image_size == (None if i < 2 else 96)
        want = [(1.0, 0.0), (0.1, 0.2)][i] if i < 2 else (0.5, 0.0)
        assert (v.blur_prob, v.solarize_prob) == want, name


def test_vit_base_preset_is_the_readme_command():
    c = load_config("dino.py", "vit_base")
    assert (c.model.variant, c.model.num_heads, c.model.drop_path_rate) == ("base", 12, 0.1)
    assert c.batch_size == 1024 and c.num_epochs == 100       # main_dino.py's --epochs
    assert (c.dino.teacher_temp, c.dino.warmup_teacher_temp_epochs) == (0.04, 0)
    assert c.dino.norm_last_layer is True
    assert (c.optimizer.name, c.optimizer.weight_decay, c.optimizer.weight_decay_end) == (
        "adamw", 0.04, 0.4)
    check_multi_crop(c, (0.4, 1.0), (0.05, 0.4))


def test_resnet50_preset_is_the_readme_command():
    c = load_config("dino.py", "resnet50")
    assert (c.model.name, c.model.depth, c.model.stem) == ("resnet", 50, "imagenet")
    assert (c.model.conv_init, c.model.zero_init_residual) == ("torchvision", False)
    assert c.model.get("bn_group_size") is None                            # SyncBatchNorm
    o = c.optimizer
    assert (o.name, o.base_lr, o.lr_scaling, o.momentum, o.nesterov) == (
        "sgd", 0.03, "linear", 0.9, False)
    assert (o.weight_decay, o.weight_decay_end, o.decay_all, o.grad_clip_per_param) == (
        1e-4, 1e-4, False, 3.0)
    assert optim.weight_decay_schedule(o, 100) == 1e-4                    # constant
    assert c.batch_size == 512 and c.num_epochs == 100
    assert (c.dino.teacher_temp, c.dino.out_dim, c.dino.norm_last_layer) == (0.04, 65536, True)
    check_multi_crop(c, (0.14, 1.0), (0.05, 0.14))


def test_cifar10_preset_is_solo_learns_recipe():
    c = load_config("dino.py", "cifar10")
    assert (c.model.depth, c.model.stem, c.dataset.name, c.dataset.image_size) == (
        18, "cifar", "cifar10", 32)
    assert (c.model.conv_init, c.model.zero_init_residual) == ("torchvision", False)
    assert (c.dino.hidden_dim, c.dino.bottleneck_dim, c.dino.out_dim) == (2048, 256, 4096)
    assert (c.dino.teacher_temp, c.dino.warmup_teacher_temp_epochs) == (0.07, 0)
    assert c.dino.norm_last_layer and c.dino.freeze_last_layer == 1.0
    assert c.ema.base == 0.9995
    o = c.optimizer
    assert (o.name, o.base_lr, o.lr_scaling, o.trust_coefficient, o.weight_decay) == (
        "lars", 0.3, "none", 0.02, 1e-6)
    assert o.lars_lr == "after_momentum" and o.grad_clip_per_param is None
    assert c.batch_size == 256 and c.num_epochs == 1000 and c.warmup_epochs == 10
    assert c.probe.lr_multiplier * o.base_lr == pytest.approx(0.1)   # classifier_lr
    v1, v2 = c.aug.view1, c.aug.view2
    assert len(view_names(c.aug)) == 2 and (v1.crop_area_min, v1.normalize) == (0.08, "cifar10")
    assert (v1.blur_prob, v1.solarize_prob, v2.blur_prob, v2.solarize_prob) == (0, 0, 0, 0.2)


@pytest.mark.parametrize("preset", ["vit_base", "resnet50"])
def test_presets_not_stepped_in_test_presets_validate_shrunk(preset):
    """tests/test_presets.py steps vit_small and cifar10 (a ViT with multi-crop, a ResNet
    without); these two differ from them in values and depth."""
    from simclr_jax.config_validation import validate_config
    validate_config(tiny("dino.py", preset, batch_size=8, image_size=16))


def test_runlocal_shrinks_the_head_and_the_local_crops():
    c = load_config("dino.py", "vit_small,runlocal")
    assert (c.dino.out_dim, c.dino.bottleneck_dim, c.dataset.image_size) == (4096, 256, 16)
    assert [c.aug[v].image_size for v in view_names(c.aug)] == [None, None] + [8] * 8
    assert c.model.num_heads is None and c.model.variant == "tiny_test"


def test_global_crops_of_two_sizes_are_one_clear_error():
    c = tiny("dino.py", "cifar10", batch_size=8, image_size=16)
    c.unlock()
    c.aug.view2.image_size = 8
    with pytest.raises(UserError, match="view1 and aug.view2 are the global crops"):
        get_method("dino").validate(c, train.make_context(c, 1000))


def test_size_groups_are_runs_of_consecutive_sizes():
    views = [np.zeros((2, s, s, 3)) for s in (16, 16, 8, 8, 8, 16)]
    assert size_groups(views) == [(0, 2), (2, 5), (5, 6)]


# ----------------------------------------------------------------------------- a short run

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """3 steps of vit_small,runlocal with 2 global crops and 1 local crop (16 / 8 px), the last
    layer frozen for 2 steps, a checkpoint after every step."""
    c = tiny("dino.py", "vit_small", batch_size=8, image_size=16, steps=3)
    c.unlock()
    for name in view_names(c.aug)[3:]:
        del c.aug[name]
    n = sources.get_source(c.dataset.name, c.dataset.train_split).num_examples
    c.dino.freeze_last_layer = 2 / (n // c.batch_size)
    c.checkpoint_every_steps, c.keep_checkpoints = 1, 3
    c.dataset.knn_train_split = ""                            # no kNN: not what is tested
    # A narrow head (runlocal keeps 2048 / 256 / 4096 for learning): these tests look at which
    # parameters move and which network is exported, not at learning; 98 s -> less in the suite.
    c.dino.hidden_dim, c.dino.bottleneck_dim, c.dino.out_dim = 64, 32, 256
    c.lock()
    assert last_layer_frozen_steps(c, train.make_context(c, n)) == 2
    workdir = str(tmp_path_factory.mktemp("dino") / "run")
    train.train_and_evaluate(c, workdir)
    return c, workdir


def test_last_layer_is_frozen_for_its_steps_then_moves(run):
    _, workdir = run
    last = [checkpoint.restore_arrays(workdir, s)["params"]["projector"]["last_layer"]["kernel"]
            for s in (1, 2, 3)]
    teacher_at_1 = checkpoint.restore_arrays(workdir, 1)["method_state"]["target_params"]
    # frozen after steps 0 and 1: still the init, which the teacher's copy also still is (up to
    # the EMA's rounding: m * x + (1 - m) * x is x within an ulp, measured 1.5e-8)
    np.testing.assert_allclose(last[0], teacher_at_1["projector"]["last_layer"]["kernel"],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(last[0], last[1])
    assert not np.allclose(last[1], last[2])
    dense = [checkpoint.restore_arrays(workdir, s)["params"]["projector"]["dense0"]["kernel"]
             for s in (1, 2)]
    assert not np.allclose(dense[0], dense[1])                # the rest of the head trains


def test_exported_and_loaded_encoder_is_the_teacher(run, tmp_path):
    from simclr_jax.export import export_encoder, load_encoder
    _, workdir = run
    arrays = checkpoint.restore_arrays(workdir)
    teacher = arrays["method_state"]["target_params"]["backbone"]
    student = arrays["params"]["backbone"]
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(teacher),
                                                        jax.tree.leaves(student)))
    for enc in (load_encoder(workdir), load_encoder(export_encoder(workdir, str(tmp_path / "e")))):
        got = enc.variables["params"]
        assert jax.tree.structure(got) == jax.tree.structure(teacher)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(teacher)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    features = enc(np.zeros((2, 16, 16, 3), np.uint8))
    assert features.shape == (2, 32) and bool(jnp.all(jnp.isfinite(features)))
