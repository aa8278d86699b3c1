"""Weights in and out (issue 20): our ResNet / ViT compute what torchvision's / timm's compute
given the same weights, in both directions, and the files we write load strictly there.

References: the real torchvision and timm (test extra), on random weights with every BN statistic
and affine, LayerNorm and bias randomised so a swapped or transposed array cannot pass. BN in
inference mode. Metric: max |ours - theirs| / max |theirs| <= 1e-5 (float32). Images: 2 of 64 px
(ResNet) or 32 px (ViT-S/16: a 2x2 grid), so each forward pass costs well under a second.
"""
import sys

# The CUDA wheels of torch bring triton, whose bundled LLVM segfaults when it loads after
# TensorFlow's (conftest imports TF first; torchvision imports torch._dynamo -> triton). Nothing
# here compiles kernels, so torch runs without it (it treats triton as not installed).
sys.modules.setdefault("triton", None)

import jax  # noqa: E402
import ml_collections
import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from simclr_jax.models import build_backbone
from simclr_jax.weights import files, timm as timm_w, torchvision as tv

torch.set_num_threads(2)
RTOL = 1e-5


def rel_diff(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def images(size, seed=0):
    return np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)


def torch_features(model, x_nhwc) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous()).numpy()


def our_features(model_cfg, variables, x) -> np.ndarray:
    module = build_backbone(ml_collections.ConfigDict(model_cfg))
    return np.asarray(module.apply(variables, x, train=False))


def randomize_torch(model, seed=0):
    """Every 1-D parameter and BN buffer random (torch's init leaves them 1 / 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or t.ndim != 1:
                continue
            if name.endswith("running_var") or name.endswith("weight"):
                t.copy_(0.6 + 0.8 * torch.rand(t.shape, generator=g))
            else:                                        # biases, running means
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
        if hasattr(model, "cls_token"):
            model.cls_token.copy_(0.5 * torch.randn(model.cls_token.shape, generator=g))


def randomize_ours(variables, seed=0):
    """Our init with every 1-D leaf (BN / LN / biases) random and BN statistics random."""
    rng = np.random.default_rng(seed)

    def leaf(path, x):
        x = np.asarray(x)
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return (0.6 + 0.8 * rng.random(x.shape)).astype(np.float32)
        if name in ("bias", "mean", "cls_token"):
            return (0.2 * rng.normal(size=x.shape)).astype(np.float32)
        return x
    return jax.tree_util.tree_map_with_path(leaf, jax.device_get(variables))


def init_ours(model_cfg, size, seed=0):
    """Random variables of our model's shapes, drawn in numpy (module.init runs op by op and
    costs a minute for a ResNet-50 on this CPU): kernels N(0, 1 / fan_in), the rest as above."""
    shapes = tv.variable_shapes(model_cfg)
    rng = np.random.default_rng(seed + 100)

    def leaf(path, s):
        names = [str(getattr(k, "key", k)) for k in path]
        if names[-1] != "kernel":
            return np.zeros(s.shape, np.float32)
        fan_in = s.shape[0] if names[-2] in ("query", "key", "value") else np.prod(s.shape[:-1])
        return (rng.normal(size=s.shape) / np.sqrt(fan_in)).astype(np.float32)
    return randomize_ours(jax.tree_util.tree_map_with_path(leaf, shapes), seed)


def torchvision_resnet(depth, stem="imagenet", same_pool=False):
    """torchvision resnet{depth} holding our backbone, changed as `tv.torch_notes` says."""
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    model.fc = nn.Identity()
    if stem == "cifar":
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    if same_pool:
        model.maxpool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, 2))
    return model


def state_dict_numpy(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- ResNet

@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_torchvision_to_ours_same_features(depth):
    model = torchvision_resnet(depth)
    randomize_torch(model, seed=depth)
    sd = state_dict_numpy(model)
    cfg = tv.infer_config(sd)
    assert (cfg["depth"], cfg["width"], cfg["stem"]) == (depth, 1.0, "imagenet")
    x = images(64)
    d = rel_diff(our_features(cfg, tv.from_torch(cfg, sd), x), torch_features(model, x))
    assert d <= RTOL, d


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_ours_to_torchvision_strict_same_features(depth):
    cfg = {"name": "resnet", "depth": depth, "stem": "imagenet", "conv_init": "torchvision"}
    variables = init_ours(cfg, 64, seed=depth)
    model = torchvision_resnet(depth)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in
                           tv.to_torch(cfg, variables).items()}, strict=True)
    x = images(64, seed=1)
    d = rel_diff(our_features(cfg, variables, x), torch_features(model, x))
    assert d <= RTOL, d


@pytest.mark.parametrize("stem, pool", [("cifar", "torch"), ("imagenet", "same")])
def test_resnet_presets_that_differ_from_torchvision_follow_the_notes(stem, pool):
    """CIFAR stem and the TF SAME stem pool (SimCLR/BYOL presets): the replacements the export
    notes name reproduce our function; without them torchvision computes something else."""
    cfg = {"name": "resnet", "depth": 18, "stem": stem, "stem_pool_padding": pool}
    notes = " ".join(tv.torch_notes(cfg))
    assert ("nn.Identity()" in notes) if stem == "cifar" else ("ZeroPad2d((0, 1, 0, 1))" in notes)
    variables = init_ours(cfg, 64, seed=3)
    sd = {k: torch.from_numpy(v) for k, v in tv.to_torch(cfg, variables).items()}
    x = images(64, seed=2)
    ours = our_features(cfg, variables, x)
    model = torchvision_resnet(18, stem=stem, same_pool=pool == "same")
    model.load_state_dict(sd, strict=True)
    assert rel_diff(ours, torch_features(model, x)) <= RTOL
    if pool == "same":           # plain torchvision's (1, 1) pool: the windows differ
        plain = torchvision_resnet(18)
        plain.load_state_dict(sd, strict=True)
        assert rel_diff(ours, torch_features(plain, x)) > 1e-3


def test_resnet_conversion_refuses_what_torchvision_cannot_hold():
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        tv.check_standard({"name": "resnet", "depth": 50, "sk_ratio": 0.0625})
    with pytest.raises(ValueError, match="projection shortcut in stage 1"):
        tv.check_standard({"name": "resnet", "depth": 18, "shortcut": "first_block_of_stage"})
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        tv.check_standard({"name": "resnet", "depth": 50, "width": 2.0})
    tv.check_standard({"name": "resnet", "depth": 50, "shortcut": "first_block_of_stage"})
    r18 = state_dict_numpy(torchvision_resnet(18))
    with pytest.raises(ValueError, match="another depth|not this architecture"):  # R18 -> R50
        tv.from_torch({"name": "resnet", "depth": 50}, r18)
    with pytest.raises(ValueError, match="another depth or width"):      # R18 file, R34 model
        tv.from_torch({"name": "resnet", "depth": 18, "width": 0.5}, r18)


# ----------------------------------------------------------------------------- ViT

VIT_S = {"name": "vit", "variant": "small", "patch_size": 16}


def timm_vit(image_size, **override):
    kw = dict(timm_w.timm_constructor(VIT_S, image_size), **override)
    return timm.models.vision_transformer.VisionTransformer(**kw)


def test_vit_timm_to_ours_same_features():
    model = timm_vit(32)
    randomize_torch(model, seed=4)
    with torch.no_grad():        # MoCo v3's fixed sin-cos embedding (vits.py), as a file has it
        model.pos_embed.copy_(torch.from_numpy(
            timm_w.vit_lib.build_2d_sincos_position_embedding(2, 2, 384)[None]))
    sd = state_dict_numpy(model)
    cfg = timm_w.infer_config(sd, num_heads=12)
    assert cfg["variant"] == "small" and cfg["patch_size"] == 16
    x = images(32, seed=5)
    d = rel_diff(our_features(cfg, timm_w.from_torch(cfg, sd), x), torch_features(model, x))
    assert d <= RTOL, d


def test_vit_ours_to_timm_strict_same_features_and_head_count_matters():
    variables = init_ours(VIT_S, 32, seed=6)
    sd = {k: torch.from_numpy(v) for k, v in timm_w.to_torch(VIT_S, variables, 32).items()}
    model = timm_vit(32)
    model.load_state_dict(sd, strict=True)
    x = images(32, seed=7)
    ours = our_features(VIT_S, variables, x)
    d = rel_diff(ours, torch_features(model, x))
    assert d <= RTOL, d
    # timm's vit_small_patch16_224 (DeiT-S) has 6 heads: it loads strictly, computes otherwise.
    deit = timm_vit(32, num_heads=6)
    deit.load_state_dict(sd, strict=True)
    assert rel_diff(ours, torch_features(deit, x)) > 1e-3
    assert "6 heads" in " ".join(timm_w.timm_notes(VIT_S, 224))


def test_vit_learned_position_embedding_is_refused():
    model = timm_vit(32)
    sd = state_dict_numpy(model)                # timm's init: a random (learned) pos_embed
    with pytest.raises(ValueError, match="learned position embedding"):
        timm_w.from_torch(VIT_S, sd)


# ----------------------------------------------------------------------------- files

def test_safetensors_written_here_read_by_the_library_and_back(tmp_path):
    import safetensors.numpy
    sd = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
          "a.num_batches_tracked": np.zeros((), np.int64), "b": np.ones((1, 1, 2), np.float16)}
    files.save_safetensors(str(tmp_path / "x.safetensors"), sd, {"format": "pt"})
    theirs = safetensors.numpy.load_file(str(tmp_path / "x.safetensors"))
    assert sorted(theirs) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(theirs[k], sd[k])
        assert theirs[k].dtype == sd[k].dtype
    safetensors.numpy.save_file(sd, str(tmp_path / "y.safetensors"))
    ours = files.load_safetensors(str(tmp_path / "y.safetensors"))
    for k in sd:
        np.testing.assert_array_equal(ours[k], sd[k])
