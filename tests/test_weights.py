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


# ----------------------------------------------------------------------------- export CLI

def native_export(path, model_cfg, variables, image_size=64, normalize="imagenet") -> str:
    """An export directory (what `python -m simclr_jax.export` writes by default) holding
    `variables`: the CLI's --workdir accepts it, and it costs no training."""
    import json

    import orbax.checkpoint as ocp

    from simclr_jax.export import ENCODER_CONFIG
    path.mkdir(parents=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path / "encoder", variables)
    ckpt.wait_until_finished()
    (path / ENCODER_CONFIG).write_text(json.dumps(
        {"model": model_cfg, "image_size": image_size, "normalize": normalize}))
    return str(path)


def export_cli(capsys, *args):
    """(exit status, stdout lines, stderr lines) of `python -m simclr_jax.export ARGS`, run
    in-process (a subprocess costs ~10 s of imports; one test runs the real one)."""
    from simclr_jax import export
    capsys.readouterr()
    try:
        export.main(list(args) + ["--distributed=off"])
        rc = 0
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out.splitlines(), [line for line in err.splitlines() if line.strip()]


def moco_convert_pretrain_to_detectron2(obj):
    """Transcription of facebookresearch/moco detection/convert-pretrain-to-detectron2.py
    (commit 8976944^), minus torch.load / pickle.dump: `obj` is the loaded MoCo checkpoint."""
    obj = obj["state_dict"]
    newmodel = {}
    for k, v in obj.items():
        if not k.startswith("module.encoder_q."):
            continue
        k = k.replace("module.encoder_q.", "")
        if "layer" not in k:
            k = "stem." + k
        for t in [1, 2, 3, 4]:
            k = k.replace("layer{}".format(t), "res{}".format(t + 1))
        for t in [1, 2, 3]:
            k = k.replace("bn{}".format(t), "conv{}.norm".format(t))
        k = k.replace("downsample.0", "shortcut")
        k = k.replace("downsample.1", "shortcut.norm")
        newmodel[k] = v.numpy()
    return {"model": newmodel, "__author__": "MOCO", "matching_heuristics": True}


R50 = {"name": "resnet", "depth": 50, "stem": "imagenet"}


def test_export_torchvision_pth_and_safetensors_and_detectron2(tmp_path, capsys):
    import pickle

    import safetensors.torch

    import simclr_jax
    variables = init_ours(R50, 64, seed=8)
    src = native_export(tmp_path / "enc", R50, variables)
    x = images(64, seed=9)
    ours = np.asarray(simclr_jax.load_encoder(src).apply(x))

    rc, out, err = export_cli(capsys, "--workdir", src, "--format", "torchvision",
                              "--out", str(tmp_path / "r50.safetensors"))
    assert rc == 0 and not err, err
    assert any("model.fc = nn.Identity()" in line for line in out)
    assert any("mean [0.485, 0.456, 0.406]" in line for line in out)
    model = torchvision_resnet(50)
    model.load_state_dict(safetensors.torch.load_file(str(tmp_path / "r50.safetensors")),
                          strict=True)
    assert rel_diff(ours, torch_features(model, x)) <= RTOL

    # detectron2: the names, shapes and values MoCo's converter writes for the same weights
    rc, out, err = export_cli(capsys, "--workdir", src, "--format", "detectron2",
                              "--out", str(tmp_path / "r50.pkl"))
    assert rc == 0 and not err, err
    assert any("MODEL.PIXEL_MEAN: [123.675, 116.280, 103.530]" in line for line in out)
    with open(tmp_path / "r50.pkl", "rb") as f:
        ours_d2 = pickle.load(f)
    theirs = moco_convert_pretrain_to_detectron2(
        {"state_dict": {"module.encoder_q." + k: v for k, v in model.state_dict().items()}})
    assert sorted(ours_d2["model"]) == sorted(theirs["model"])
    assert "stem.conv1.norm.running_var" in ours_d2["model"] and "res5.2.conv3.norm.bias" in \
        ours_d2["model"] and "res2.0.shortcut.norm.weight" in ours_d2["model"]
    for k, v in theirs["model"].items():
        np.testing.assert_array_equal(ours_d2["model"][k], v)
    assert ours_d2["matching_heuristics"] is True


def test_export_cli_pth_and_timm_in_a_real_process(tmp_path):
    """The real command line: a ResNet-18 .pth for torchvision and a ViT-S .pth for timm."""
    import os
    import subprocess

    from conftest import TEST_XLA_FLAGS
    from tiny_configs import ROOT
    r18 = {"name": "resnet", "depth": 18, "stem": "imagenet"}
    vit_vars = init_ours(VIT_S, 32, seed=10)
    srcs = [native_export(tmp_path / "r18", r18, init_ours(r18, 64, seed=11)),
            native_export(tmp_path / "vit", VIT_S, vit_vars, image_size=32, normalize="none")]
    code = ("import sys; sys.modules['triton'] = None; from simclr_jax import export; "
            "[export.main(['--workdir', w, '--format', f, '--out', o]) for w, f, o in "
            f"[({srcs[0]!r}, 'torchvision', {str(tmp_path / 'r18.pth')!r}), "
            f"({srcs[1]!r}, 'timm', {str(tmp_path / 'vit.pth')!r})]]")
    env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "num_heads=12" in r.stdout and "6 heads" in r.stdout
    model = torchvision_resnet(18)
    model.load_state_dict(torch.load(tmp_path / "r18.pth", weights_only=True), strict=True)
    vit = timm_vit(32)
    vit.load_state_dict(torch.load(tmp_path / "vit.pth", weights_only=True), strict=True)
    import simclr_jax
    x = images(32, seed=12)
    ours = np.asarray(simclr_jax.load_encoder(srcs[1]).apply(x))
    assert rel_diff(ours, torch_features(vit, x)) <= RTOL


def test_export_refuses_backbones_without_a_counterpart_in_one_line(tmp_path, capsys):
    r18 = {"name": "resnet", "depth": 18, "stem": "cifar"}
    sk = {"name": "resnet", "depth": 50, "stem": "imagenet", "sk_ratio": 0.0625}
    quarter = {"name": "resnet", "depth": 18, "width": 0.25, "stem": "cifar"}
    dirs = {name: native_export(tmp_path / name, cfg, init_ours(cfg, 32), image_size=32)
            for name, cfg in [("r18", r18), ("sk", sk), ("quarter", quarter)]}
    cases = [(dirs["sk"], "torchvision", "x.pth", "SK-ResNets"),
             (dirs["quarter"], "torchvision", "x.pth", "no torchvision counterpart"),
             (dirs["r18"], "timm", "x.pth", "holds ViTs"),
             (dirs["r18"], "detectron2", "x.pkl", "CIFAR-stem"),
             (dirs["r18"], "torchvision", "x.npz", ".pth or .safetensors"),
             (str(tmp_path / "missing"), "torchvision", "x.pth", "missing")]
    for src, fmt, out, expect in cases:
        rc, _, err = export_cli(capsys, "--workdir", src, "--format", fmt,
                                "--out", str(tmp_path / out))
        assert rc == 2 and len(err) == 1 and err[0].startswith("error:"), (fmt, err)
        assert expect in err[0], err
    # the CIFAR stem exports to torchvision, with the note saying what to replace
    rc, out, err = export_cli(capsys, "--workdir", dirs["r18"], "--format", "torchvision",
                              "--out", str(tmp_path / "c.pth"))
    assert rc == 0 and any("model.maxpool = nn.Identity()" in line for line in out), out


# ----------------------------------------------------------------------------- released formats
# Each writer makes a small file in the layout the reference's own code saves (key names,
# prefixes, nesting, dtype; a ResNet-18 instead of a ResNet-50 to stay cheap). The encoder a
# reference evaluates must be the one imported: the other encoders in the file get different
# weights, so picking the wrong one fails the feature comparison.

def _perturbed(sd, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: v if not v.is_floating_point() else 1.5 * v if k.endswith("running_var")
            else v + 0.5 * torch.randn(v.shape, generator=g) for k, v in sd.items()}


def _mlp(prefix, dims, seed, bn=True):
    """A torch MLP's state dict under `prefix` (Linear, [BN], ReLU, Linear ...)."""
    g = torch.Generator().manual_seed(seed)
    out, i = {}, 0
    for a, b in zip(dims[:-1], dims[1:]):
        out[f"{prefix}{i}.weight"] = torch.randn(b, a, generator=g)
        out[f"{prefix}{i}.bias"] = torch.zeros(b)
        i += 3 if bn else 2
    return out


def _sgd_state():
    return {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4,
                                           "params": [0, 1]}]}


def moco_v2_file(path, backbone_sd):
    """facebookresearch/moco main_moco.py (commit 8976944^): save_checkpoint({"epoch", "arch",
    "state_dict": model.state_dict(), "optimizer"}) of a DistributedDataParallel(MoCo): query
    and key encoders (torchvision resnet with fc replaced by the --mlp head fc.0 / fc.2), the
    queue [dim, K] and queue_ptr."""
    sd = {f"module.encoder_q.{k}": v for k, v in backbone_sd.items()}
    sd.update(_mlp("module.encoder_q.fc.", (512, 512, 128), 1, bn=False))
    sd.update({f"module.encoder_k.{k}": v for k, v in _perturbed(backbone_sd, 2).items()})
    sd.update(_mlp("module.encoder_k.fc.", (512, 512, 128), 3, bn=False))
    sd["module.queue"] = torch.randn(128, 64)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd,
                "optimizer": _sgd_state()}, path)


def moco_v3_file(path, backbone_sd, vit=False):
    """facebookresearch/moco-v3 main_moco.py: {"epoch", "arch", "state_dict", "optimizer",
    "scaler"}; state_dict of DDP(MoCo_ResNet / MoCo_ViT): module.base_encoder.* (its fc / head
    replaced by the projector MLP), module.momentum_encoder.*, module.predictor.*."""
    head = "head." if vit else "fc."
    d = 384 if vit else 512
    sd = {f"module.base_encoder.{k}": v for k, v in backbone_sd.items()}
    sd.update(_mlp(f"module.base_encoder.{head}", (d, 64, 32), 4))
    mom = _perturbed(backbone_sd, 5)
    if vit:
        mom["pos_embed"] = backbone_sd["pos_embed"]            # fixed sin-cos in both encoders
    sd.update({f"module.momentum_encoder.{k}": v for k, v in mom.items()})
    sd.update(_mlp(f"module.momentum_encoder.{head}", (d, 64, 32), 6))
    sd.update(_mlp("module.predictor.", (32, 64, 32), 7))
    torch.save({"epoch": 300, "arch": "vit_small" if vit else "resnet50", "state_dict": sd,
                "optimizer": _sgd_state(), "scaler": {"scale": 65536.0}}, path)


def simsiam_file(path, backbone_sd):
    """facebookresearch/simsiam main_simsiam.py: {"epoch", "arch", "state_dict", "optimizer"};
    DDP(SimSiam): module.encoder.* (torchvision resnet, fc = the 3-layer projector),
    module.predictor.*."""
    sd = {f"module.encoder.{k}": v for k, v in backbone_sd.items()}
    sd.update(_mlp("module.encoder.fc.", (512, 512, 512, 128), 8))
    sd.update(_mlp("module.predictor.", (128, 32, 128), 9))
    torch.save({"epoch": 100, "arch": "resnet18", "state_dict": sd,
                "optimizer": _sgd_state()}, path)


def swav_file(path, backbone_sd):
    """The released swav_800ep_pretrain.pth.tar: model.state_dict() of DDP(src/resnet50.py) with
    no wrapper dict: module.* with torchvision names, module.projection_head.*,
    module.prototypes.weight. (main_swav.py's own checkpoints wrap it in "state_dict".)"""
    sd = {f"module.{k}": v for k, v in backbone_sd.items()}
    sd.update(_mlp("module.projection_head.", (512, 64, 32), 10))
    sd["module.prototypes.weight"] = torch.randn(100, 32)
    torch.save(sd, path)


def dino_file(path, backbone_sd):
    """facebookresearch/dino main_dino.py's checkpoint.pth: {"student", "teacher", "optimizer",
    "epoch", "args", "dino_loss"}; student = DDP(MultiCropWrapper): module.backbone.* and
    module.head.*; a ResNet teacher has BN so it is DDP-wrapped too (module.backbone.*).
    DINO evaluates the teacher (eval_linear.py --checkpoint_key teacher)."""
    import argparse
    student = {f"module.backbone.{k}": v for k, v in _perturbed(backbone_sd, 11).items()}
    student.update(_mlp("module.head.mlp.", (512, 64, 32), 12, bn=False))
    teacher = {f"module.backbone.{k}": v for k, v in backbone_sd.items()}
    teacher.update(_mlp("module.head.mlp.", (512, 64, 32), 13, bn=False))
    torch.save({"student": student, "teacher": teacher, "optimizer": _sgd_state(),
                "epoch": 100, "args": argparse.Namespace(arch="resnet50", patch_size=16),
                "dino_loss": {"center": torch.zeros(1, 32)}}, path)


RELEASED_RESNET = [("moco_v2.pth.tar", moco_v2_file, "module.encoder_q."),
                   ("moco_v3_r50.pth.tar", moco_v3_file, "module.base_encoder."),
                   ("simsiam.pth.tar", simsiam_file, "module.encoder."),
                   ("swav_800ep_pretrain.pth.tar", swav_file, "module."),
                   ("dino_checkpoint.pth", dino_file, "teacher/module.backbone.")]


def test_released_resnet_formats_load_the_encoder_the_reference_evaluates(tmp_path):
    import simclr_jax
    from simclr_jax.weights import released
    model = torchvision_resnet(18)
    randomize_torch(model, seed=20)
    x = images(64, seed=21)
    theirs = torch_features(model, x)
    backbone_sd = model.state_dict()
    for name, write, where in RELEASED_RESNET:
        write(tmp_path / name, backbone_sd)
        w = released.import_file(str(tmp_path / name))
        assert where in w.source and w.format == "torchvision_resnet", (name, w.source)
        assert (w.model_config["depth"], w.normalize, w.image_size) == (18, "imagenet", 224)
        encoder = simclr_jax.load_encoder(str(tmp_path / name))
        assert rel_diff(encoder.apply(x), theirs) <= RTOL, name
    # MoCo v3's momentum encoder on request
    w = released.import_file(str(tmp_path / "moco_v3_r50.pth.tar"),
                             prefix="module.momentum_encoder.")
    assert rel_diff(our_features(w.model_config, {"params": w.params,
                                                   "batch_stats": w.batch_stats}, x), theirs) > 1e-2


def test_a_non_default_encoder_is_chosen_by_name_in_every_entry_point(tmp_path, capsys):
    """`encoder=` / `--encoder` / `--config.init_encoder`: DINO's student (a top-level key) and
    MoCo v3's momentum encoder (a prefix) instead of the encoder the reference evaluates; the
    same name on a workdir, or a name the file lacks, is one line."""
    import simclr_jax
    from simclr_jax.errors import UserError
    from simclr_jax.evaluate import classifier
    model = torchvision_resnet(18)
    randomize_torch(model, seed=30)
    sd = {k: v.clone() for k, v in model.state_dict().items()}   # not views of the model's
    dino_file(tmp_path / "dino.pth", sd)
    moco_v3_file(tmp_path / "moco_v3.pth.tar", sd)
    x = images(64, seed=31)
    students = {f"module.backbone.{k}": v for k, v in _perturbed(sd, 11).items()}
    model.load_state_dict({k[len("module.backbone."):]: v for k, v in students.items()})
    student = torch_features(model, x)
    model.load_state_dict({k: v for k, v in _perturbed(sd, 5).items()})
    momentum = torch_features(model, x)
    assert rel_diff(simclr_jax.load_encoder(str(tmp_path / "dino.pth"), encoder="student")
                    .apply(x), student) <= RTOL
    pre, arrays = classifier.load_pretraining(str(tmp_path / "moco_v3.pth.tar"), None,
                                              "module.momentum_encoder.")
    assert rel_diff(our_features(pre.model.to_dict(), {"params": arrays["params"]["backbone"],
                                                        "batch_stats": arrays["batch_stats"]
                                                        ["backbone"]}, x), momentum) <= RTOL
    rc, out, err = export_cli(capsys, "--workdir", str(tmp_path / "dino.pth"), "--encoder",
                              "student/module.backbone.", "--format", "torchvision", "--out",
                              str(tmp_path / "student.pth"))
    assert rc == 0, err
    model.load_state_dict({k: torch.from_numpy(v) for k, v in
                           files.load_pth(str(tmp_path / "student.pth")).items()}, strict=False)
    assert rel_diff(torch_features(model, x), student) <= RTOL
    with pytest.raises(UserError, match="no ResNet .* backbone under any known prefix"):
        simclr_jax.load_encoder(str(tmp_path / "dino.pth"), encoder="module.ema.")
    with pytest.raises(UserError, match="picks an encoder inside a weights file"):
        classifier.load_pretraining(str(tmp_path), None, "student")


def test_vit_moco_v3_format_loads_the_base_encoder(tmp_path):
    import simclr_jax
    model = timm_vit(32)
    randomize_torch(model, seed=22)
    with torch.no_grad():        # vits.py: the fixed sin-cos embedding, saved as a Parameter
        model.pos_embed.copy_(torch.from_numpy(
            timm_w.vit_lib.build_2d_sincos_position_embedding(2, 2, 384)[None]))
    moco_v3_file(tmp_path / "vit.pth.tar", model.state_dict(), vit=True)
    encoder = simclr_jax.load_encoder(str(tmp_path / "vit.pth.tar"))
    assert encoder.model_config["variant"] == "small" and encoder.image_size == 32
    x = images(32, seed=23)
    assert rel_diff(encoder.apply(x), torch_features(model, x)) <= RTOL


def test_knn_eval_cli_on_released_files_and_bad_files_in_one_line(tmp_path, capsys):
    """`knn_eval --config.init_from=FILE` through the real command line: a MoCo v2 file
    evaluates (the other formats share its path: import_file, tested above); a truncated file
    gives one `error:` line and exit status 2 there; another architecture's checkpoint and a
    file that is no checkpoint do the same through the export command line (in-process: each
    real process costs ~10 s of imports)."""
    import json
    import os
    import subprocess

    from conftest import TEST_XLA_FLAGS
    from tiny_configs import ROOT
    r18 = torchvision_resnet(18)
    randomize_torch(r18, seed=24)
    moco_v2_file(tmp_path / "moco_v2.pth.tar", r18.state_dict())
    with open(tmp_path / "moco_v2.pth.tar", "rb") as f:
        (tmp_path / "truncated.pth.tar").write_bytes(f.read()[:4096])
    torch.save({"state_dict": torchvision.models.mobilenet_v3_small().state_dict()},
               tmp_path / "mobilenet.pth")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    data = ["--config.dataset.name=digits", "--config.dataset.image_size=32",
            "--config.dataset.knn_train_split=train[:5]", "--config.dataset.knn_test_split=test[:2]",
            "--config.eval.batch_size=16", "--config.eval.knn_k=5"]
    cases = {"moco_v2.pth.tar": None,
             "truncated.pth.tar": "cannot be read as a PyTorch checkpoint"}
    env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               TF_CPP_MIN_LOG_LEVEL="3")
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "simclr_jax.main", "--config", "configs/knn_eval.py",
         f"--config.init_from={tmp_path / name}", "--workdir", str(tmp_path / f"knn_{name}"),
         *data], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in cases}
    for name, expect in cases.items():
        _, err = procs[name].communicate(timeout=600)
        if expect is None:
            assert procs[name].returncode == 0, err[-3000:]
            with open(tmp_path / f"knn_{name}" / "knn_eval.json") as f:
                result = json.load(f)
            assert result["num_bank_examples"] == 50 and result["num_test_examples"] == 20
            assert result["knn_top1"] > 0.2, result          # chance: 0.1
        else:
            lines = [line for line in err.splitlines() if line.startswith("error:")]
            assert procs[name].returncode == 2 and "Traceback" not in err, err[-3000:]
            assert len(lines) == 1 and expect in lines[0] and name in lines[0], lines
    for name, expect in (("mobilenet.pth", "no ResNet (conv1.weight) or ViT (cls_token) backbone"),
                         ("notes.txt", "is not a weights file")):
        rc, _, err = export_cli(capsys, "--workdir", str(tmp_path / name), "--format",
                                "torchvision", "--out", str(tmp_path / "x.pth"))
        assert rc == 2 and len(err) == 1 and err[0].startswith("error:"), err
        assert expect in err[0] and name in err[0], err


# ----------------------------------------------------------------------------- BYOL (Haiku)

def torch_same_padding_resnet18_with_stage1_projection():
    """BYOL's Haiku ResNet-18 in torch: every conv and the stem pool TF SAME (at 64 px every
    feature map is even: a strided 7x7 pads (2, 3), a strided 3x3 and the pool (0, 1)), and a
    projection shortcut on every group's first block (use_projection=(True,) * 4)."""
    import torch.nn.functional as F
    model = torchvision_resnet(18)
    model.layer1[0].downsample = nn.Sequential(nn.Conv2d(64, 64, 1, bias=False),
                                               nn.BatchNorm2d(64))

    def same(module, pads):
        module.padding = 0
        module.register_forward_pre_hook(lambda m, inp: (F.pad(inp[0], pads),))
    same(model.conv1, (2, 3, 2, 3))
    same(model.maxpool, (0, 1, 0, 1))                # after ReLU: zero padding = -inf padding
    for layer in (model.layer2, model.layer3, model.layer4):
        same(layer[0].conv1, (0, 1, 0, 1))
    return model


def haiku_byol_layout(sd, top="res_net18"):
    """(params, state) with the Haiku names of byol/utils/networks.py + haiku/_src/nets/
    resnet.py (BlockV1) + batch_norm.py, from a torchvision-named ResNet-18 state dict."""
    params, state = {}, {}
    t = lambda v: v.numpy().astype(np.float32)                                   # noqa: E731

    def module_name(k):
        if k.startswith(("conv1", "bn1")):
            return f"{top}/~/" + ("initial_conv" if k.startswith("conv1") else "initial_batchnorm")
        layer, block, rest = k.split(".")[0], k.split(".")[1], k.split(".")[2:]
        base = f"{top}/~/block_group_{int(layer[-1]) - 1}/~/block_{block}/~/"
        if rest[0] == "downsample":
            return base + ("shortcut_conv" if rest[1] == "0" else "shortcut_batchnorm")
        i = int(rest[0][-1]) - 1
        return base + (f"conv_{i}" if rest[0].startswith("conv") else f"batchnorm_{i}")

    for k, v in sd.items():
        if k.startswith("fc") or k.endswith("num_batches_tracked"):
            continue
        name, leaf = module_name(k), k.split(".")[-1]
        if v.ndim == 4:
            params[name] = {"w": t(v).transpose(2, 3, 1, 0)}                    # HWIO
        elif leaf in ("weight", "bias"):
            params.setdefault(name, {})["scale" if leaf == "weight" else "offset"] = \
                t(v).reshape(1, 1, 1, -1)
        else:
            avg = t(v).reshape(1, 1, 1, -1)
            state[f"{name}/~/{'mean_ema' if leaf == 'running_mean' else 'var_ema'}"] = {
                "counter": np.array(5000, np.int32), "hidden": 0.9 * avg, "average": avg}
    return params, state


def byol_checkpoint_file(path, params, state):
    """byol/utils/checkpointing.py: dill.dump(dict(experiment_state=<_ByolExperimentState,
    arrays device_get'ed>, step, rng), protocol=2). The namedtuples live in modules the reader
    does not have (byol.byol_experiment, byol.utils.optimizers)."""
    import collections
    import pickle
    import types
    fake = {n: types.ModuleType(n) for n in ("byol", "byol.byol_experiment",
                                             "byol.utils", "byol.utils.optimizers")}
    State = collections.namedtuple("_ByolExperimentState", ["online_params", "target_params",
                                                            "online_state", "target_state",
                                                            "opt_state"])
    Lars = collections.namedtuple("LarsState", ["mu"])
    State.__module__, Lars.__module__ = "byol.byol_experiment", "byol.utils.optimizers"
    fake["byol.byol_experiment"]._ByolExperimentState = State
    fake["byol.utils.optimizers"].LarsState = Lars
    target = {k: {n: a + 0.5 for n, a in v.items()} for k, v in params.items()}
    sys.modules.update(fake)
    try:
        with open(path, "wb") as f:
            pickle.dump({"experiment_state": State(params, target, state, state, Lars(target)),
                         "step": 1000, "rng": np.zeros(2, np.uint32)}, f, protocol=2)
    finally:
        for n in fake:
            del sys.modules[n]


def test_byol_haiku_checkpoint_needs_same_padding_and_gets_it(tmp_path):
    """deepmind-research #84: BYOL's weights lose accuracy unless every conv pads as TF SAME.
    The import selects conv_padding="same" and our features equal the SAME-padded torch
    ResNet's; the same weights with torchvision's padding compute something else."""
    import simclr_jax
    model = torch_same_padding_resnet18_with_stage1_projection()
    randomize_torch(model, seed=30)
    params, state = haiku_byol_layout(model.state_dict())
    byol_checkpoint_file(tmp_path / "byol.pkl", params, state)
    encoder = simclr_jax.load_encoder(str(tmp_path / "byol.pkl"))
    cfg = encoder.model_config
    assert (cfg["conv_padding"], cfg["stem_pool_padding"], cfg["shortcut"]) == (
        "same", "same", "first_block_of_stage")
    x = images(64, seed=31)
    theirs = torch_features(model, x)
    assert rel_diff(encoder.apply(x), theirs) <= RTOL
    torch_padded = our_features(dict(cfg, conv_padding="torch"), encoder.variables, x)
    assert rel_diff(torch_padded, theirs) > 1e-3


def test_dino_vit_learned_position_embedding_six_heads_teacher(tmp_path):
    """DINO's ViT-S/16 (dino/vision_transformer.py: timm names, a learned pos_embed, 6 heads):
    the full checkpoint's teacher (not DDP-wrapped for a BN-free ViT: `backbone.*`) and the
    released backbone-only dino_deitsmall16_pretrain.pth (plain names) both import, with
    pos_embed="learned" and 6 heads, and compute timm's features."""
    import argparse

    import simclr_jax
    model = timm_vit(32, num_heads=6)
    randomize_torch(model, seed=40)                 # pos_embed stays timm's random (learned) one
    sd = model.state_dict()
    student = {f"module.backbone.{k}": v for k, v in _perturbed(sd, 41).items()}
    student.update(_mlp("module.head.mlp.", (384, 64, 32), 42, bn=False))
    teacher = {f"backbone.{k}": v for k, v in sd.items()}
    teacher.update(_mlp("head.mlp.", (384, 64, 32), 43, bn=False))
    torch.save({"student": student, "teacher": teacher, "optimizer": _sgd_state(), "epoch": 100,
                "args": argparse.Namespace(arch="vit_small", patch_size=16),
                "dino_loss": {"center": torch.zeros(1, 32)}}, tmp_path / "checkpoint.pth")
    torch.save(dict(sd), tmp_path / "dino_deitsmall16_pretrain.pth")
    x = images(32, seed=44)
    theirs = torch_features(model, x)
    for name in ("checkpoint.pth", "dino_deitsmall16_pretrain.pth"):
        encoder = simclr_jax.load_encoder(str(tmp_path / name))
        cfg = encoder.model_config
        assert (cfg["pos_embed"], cfg["num_heads"], cfg["pos_embed_grid"]) == ("learned", 6, 2)
        assert rel_diff(encoder.apply(x), theirs) <= RTOL, name
    # and back out to timm: the learned embedding and the head count travel along
    back = timm_w.to_torch(cfg, encoder.variables, 32)
    np.testing.assert_array_equal(back["pos_embed"], sd["pos_embed"].numpy())
    assert "num_heads=6" in timm_w.timm_notes(cfg, 32)[0]


# ----------------------------------------------------------------------------- pretraining init

def torchvision_names_resnet10(width_channels=8, seed=0):
    """A state dict in torchvision's names and layouts (conv [out, in, kh, kw]; BN weight, bias,
    running_mean, running_var, num_batches_tracked) for ResNet(BasicBlock, [1, 1, 1, 1]) at
    `width_channels` stem channels with MoCo's CIFAR conv1 (3x3) and no fc."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, cout, cin, k):
        sd[f"{name}.weight"] = (rng.normal(size=(cout, cin, k, k)) / np.sqrt(cin * k * k)
                                ).astype(np.float32)

    def bn(name, c):
        sd[f"{name}.weight"] = (0.6 + 0.8 * rng.random(c)).astype(np.float32)
        sd[f"{name}.bias"] = (0.2 * rng.normal(size=c)).astype(np.float32)
        sd[f"{name}.running_mean"] = (0.2 * rng.normal(size=c)).astype(np.float32)
        sd[f"{name}.running_var"] = (0.6 + 0.8 * rng.random(c)).astype(np.float32)
        sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

    c = width_channels
    conv("conv1", c, 3, 3)
    bn("bn1", c)
    cin = c
    for s in range(1, 5):
        cout = c * 2 ** (s - 1)
        conv(f"layer{s}.0.conv1", cout, cin, 3)
        bn(f"layer{s}.0.bn1", cout)
        conv(f"layer{s}.0.conv2", cout, cout, 3)
        bn(f"layer{s}.0.bn2", cout)
        if s > 1:
            conv(f"layer{s}.0.downsample.0", cout, cin, 1)
            bn(f"layer{s}.0.downsample.1", cout)
        cin = cout
    return sd


def test_pretraining_starts_from_a_weights_file_online_and_target(tmp_path):
    """`--config.init_from=FILE` for pretraining: BYOL's online backbone and its EMA target
    start as the file's network (checked against the file's torchvision arrays, transposed here:
    conv [out, in, kh, kw] -> [kh, kw, in, out]); the projector and predictor start fresh. The
    run is one step at learning rate 0, so the checkpoint holds the starting parameters (the
    target after one EMA update of equal trees, so up to rounding). A
    config whose network differs from the file's is refused in one line naming the fix."""
    from simclr_jax import checkpoint, train
    from simclr_jax.errors import UserError
    from tiny_configs import tiny
    sd = torchvision_names_resnet10()
    files.save_pth(str(tmp_path / "r10.pth"), sd)
    config = tiny("byol.py", steps=1)
    config.unlock()
    config.init_from = str(tmp_path / "r10.pth")
    config.optimizer.base_lr = 0.0
    config.checkpoint_every_steps = 1
    assert config.model.depth == 10 and config.model.width == 0.125
    config.model.width = 0.25
    with pytest.raises(UserError, match=r"holds another network than config\.model "
                                        r"\(width=0\.25\).*--config\.model\.width=0\.125$"):
        train.train_and_evaluate(config, str(tmp_path / "refused"))
    config.model.width = 0.125
    train.train_and_evaluate(config, str(tmp_path / "run"))
    arrays = checkpoint.restore_arrays(str(tmp_path / "run"))
    expected = {("stem_conv", "kernel"): sd["conv1.weight"].transpose(2, 3, 1, 0),
                ("stage3_block1", "conv2", "kernel"): sd["layer3.0.conv2.weight"].transpose(
                    2, 3, 1, 0),
                ("stage4_block1", "shortcut", "conv", "kernel"):
                sd["layer4.0.downsample.0.weight"].transpose(2, 3, 1, 0),
                ("stage2_block1", "bn1", "scale"): sd["layer2.0.bn1.weight"],
                ("stage4_block1", "bn2", "bias"): sd["layer4.0.bn2.bias"]}
    online = arrays["params"]["backbone"]
    target = arrays["method_state"]["target_params"]["backbone"]
    for path, value in expected.items():
        leaves = []
        for tree in (online, target):
            leaf = tree
            for k in path:
                leaf = leaf[k]
            leaves.append(leaf)
        np.testing.assert_array_equal(leaves[0], value, err_msg=str(path))
        # the target has had one EMA update m * x + (1 - m) * x: x up to rounding
        np.testing.assert_allclose(leaves[1], value, rtol=1e-6, atol=0, err_msg=str(path))
