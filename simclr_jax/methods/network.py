"""SSLNetwork: backbone -> projector (-> predictor), plus an optional online linear probe.

One module for every method, so the target (EMA) network is the same module applied to the
target parameters, and evaluation/export only need the "backbone" subtree.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax


class SSLNetwork(nn.Module):
    backbone: nn.Module
    projector: nn.Module
    predictor: Optional[nn.Module] = None
    num_classes: int = 0           # > 0 adds the online linear probe on stop-gradient features

    def setup(self):
        if self.num_classes > 0:
            self.probe = nn.Dense(self.num_classes, name="probe")

    def __call__(self, x, train: bool, use_predictor: bool = True, use_probe: bool = True):
        features = self.backbone(x, train=train)                         # [B, F]
        proj = self.projector(features, train=train)                     # [B, D]
        out = {"features": features, "proj": proj}
        if self.predictor is not None and use_predictor:
            out["pred"] = self.predictor(proj, train=train)              # [B, D]
        if self.num_classes > 0 and use_probe:
            out["probe_logits"] = self.probe(jax.lax.stop_gradient(features))  # [B, C]
        return out


class EncoderNetwork(nn.Module):
    """What evaluation applies: a method's encoder backbone, optionally followed by the
    projector (the kNN monitor's knn_features="projection"). Variable names are the online
    network's ("backbone", "projector"), so checkpoint subtrees plug in as they are."""
    backbone: nn.Module
    projector: Optional[nn.Module] = None

    def __call__(self, x, train: bool = False):
        features = self.backbone(x, train=train)                         # [B, F]
        if self.projector is not None:
            return self.projector(features, train=train)                 # [B, D]
        return features

    def encode(self, x, train: bool = False):
        return self(x, train=train)
