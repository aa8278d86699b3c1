"""The SimCLR ResNet-50 train step in PyTorch as its users run it, for a same-card ratio.

    python benchmarks/torch_reference.py                 # GPU: bf16 autocast, channels_last,
                                                         # torch.compile, per-device batch 128
    python benchmarks/torch_reference.py --smoke         # ResNet-18, 32 px, CPU, no compile

Optional: needs torch and torchvision (not dependencies of simclr_jax). The step is the one
benchmarks/accelerator.py times as `simclr_r50_bf16`: torchvision ResNet-50 (fc removed), the
SimCLR v1 projector (2048 -> 2048 -> BN -> ReLU -> 128 -> BN), NT-Xent at T=0.1 over both
views in one forward pass, SGD with momentum (LARS adds a few elementwise ops per parameter; it
is not in torch), random images already on the GPU (the input pipeline is measured separately).
Prints images/s (each image = two views) after compile and warm-up.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def projector(dim_in=2048, hidden=2048, out=128) -> nn.Module:
    return nn.Sequential(nn.Linear(dim_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out, affine=False))


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """z: [2B, D], views stacked [view1; view2]; mean over both directions, summed like SimCLR."""
    z = F.normalize(z.float(), dim=1)
    n = z.shape[0] // 2
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(-1e9)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return 2 * F.cross_entropy(logits, targets)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128, help="images per step (x2 views)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--arch", default="resnet50", help="torchvision ResNet (smoke: resnet18)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU, no compile")
    a = p.parse_args()
    if a.smoke:
        a.batch, a.size, a.steps, a.no_compile, a.arch = 4, 32, 1, True, "resnet18"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    backbone = getattr(torchvision.models, a.arch)()
    width = backbone.fc.in_features
    backbone.fc = nn.Identity()
    model = nn.Sequential(backbone, projector(width, width)).to(device).to(
        memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)

    def step(x):
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            z = model(x)
        loss = nt_xent(z, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if not a.no_compile:
        step = torch.compile(step)
    x = torch.rand(2 * a.batch, 3, a.size, a.size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(3):                          # compile + warm-up
        step(x)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step(x)
    loss.item()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"# torch {torch.__version__} | torchvision {torchvision.__version__} | {name}")
    print("| case | batch | px | step ms | img/s |")
    print("|---|---|---|---|---|")
    arch = "R50" if a.arch == "resnet50" else a.arch
    print(f"| torch SimCLR {arch} bf16 autocast, channels_last, "
          f"{'eager' if a.no_compile else 'torch.compile'} | {a.batch} | {a.size} | "
          f"{dt * 1e3:.1f} | {a.batch / dt:.1f} |")


if __name__ == "__main__":
    main()
