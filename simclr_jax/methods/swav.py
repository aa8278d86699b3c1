"""SwAV (Caron et al., 2020): swapped prediction of online cluster codes (facebookresearch/swav
`main_swav.py`, `src/resnet50.py`).

Network: backbone -> projector (Linear -> BN -> ReLU -> Linear, biases as PyTorch's) -> L2
normalisation -> prototypes (a bias-free Linear to `swav.num_prototypes`, its rows unit-norm).
Multi-crop: the views are `aug.view1..viewV`; consecutive views of one size form a resolution
group that goes through the backbone in ONE pass (BN statistics per group, as the reference's
`forward`), and the projector runs once over all crops (its BN over every crop).
Codes: Sinkhorn-Knopp over the global batch of the views in `swav.crops_for_assign` (0-based),
preceded by a queue of their past embeddings once the queue is full; each coded view is then
predicted by every other view (`losses.swapped_prediction`).
Prototypes: unit-norm at init and after every optimizer step (the reference normalises them in
place, without gradient, before each forward pass: the same weights every forward sees); frozen
(no gradient, so no update, momentum or weight decay) for the first
`swav.freeze_prototypes_niters` steps, a ParamGroup.
Queue (`swav.queue_length` > 0): from epoch `swav.epoch_queue_starts` on, each step pushes the
global batch of the coded views' embeddings (newest first); Sinkhorn uses it once it is full.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax import losses
from simclr_jax.errors import UserError
from simclr_jax.data.aug_presets import view_names
from simclr_jax.methods import Method, ParamGroup, common, frozen_backbone_groups, probe_group


def unit_rows(w: jnp.ndarray) -> jnp.ndarray:
    """Prototype kernel [D, K] with each prototype (a column; PyTorch's weight row) of norm 1,
    as torch.nn.functional.normalize(weight, dim=1) (eps 1e-12 on the norm)."""
    return w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), 1e-12)


def unit_init(init):
    """`init`, then each prototype normalised (the reference's first iteration does it)."""
    return lambda key, shape, dtype=jnp.float32: unit_rows(init(key, shape, dtype))


class PrototypeNetwork(nn.Module):
    """backbone -> projector -> L2 norm -> prototype scores, plus the optional online probe."""
    backbone: nn.Module
    projector: nn.Module
    num_prototypes: int
    num_classes: int = 0

    def setup(self):
        from simclr_jax.models.heads import TORCH_LINEAR_INIT
        self.prototypes = nn.Dense(self.num_prototypes, use_bias=False,
                                   kernel_init=unit_init(TORCH_LINEAR_INIT))
        if self.num_classes > 0:
            self.probe = nn.Dense(self.num_classes)

    def __call__(self, x, train: bool, use_probe: bool = True):
        return self.multi_crop([x], train=train, use_probe=use_probe)

    def multi_crop(self, groups, train: bool, use_probe: bool = True):
        """groups: [G_i * B, S_i, S_i, 3] per resolution; outputs over all N = sum G_i * B."""
        features = jnp.concatenate([self.backbone(x, train=train) for x in groups])  # [N, F]
        proj = losses.l2_normalize(self.projector(features, train=train))       # [N, D]
        out = {"features": features, "proj": proj,
               "scores": self.prototypes(proj).astype(jnp.float32)}             # [N, K]
        if self.num_classes > 0 and use_probe:
            out["probe_logits"] = self.probe(jax.lax.stop_gradient(features))   # [N, C]
        return out


def resolution_groups(views: list) -> list:
    """Consecutive views of one size concatenated ([n * B, S, S, 3] each), in view order: the
    reference's unique_consecutive over crop sizes."""
    groups, run = [], [views[0]]
    for x in views[1:]:
        if x.shape[1:] == run[-1].shape[1:]:
            run.append(x)
        else:
            groups.append(run)
            run = [x]
    groups.append(run)
    return [jnp.concatenate(g) if len(g) > 1 else g[0] for g in groups]


def codes_with_queue(scores, queue_scores, queue_in_use, epsilon: float, iterations: int):
    """Sinkhorn codes [B, K] of a batch's scores [B, K], with the queue's scores [L, K] as extra
    examples while queue_in_use (the reference's cat((queue @ W^T, out)) and [-bs:])."""
    if queue_scores is None:
        return losses.sinkhorn(scores, epsilon, iterations)
    L, B = queue_scores.shape[0], scores.shape[0]
    valid = jnp.concatenate([jnp.full((L,), queue_in_use), jnp.ones((B,), bool)])   # [L + B]
    both = jnp.concatenate([queue_scores, scores])                                  # [L + B, K]
    return losses.sinkhorn(both, epsilon, iterations, valid)[L:]


def push(queue, embeddings):
    """FIFO, newest first: queue [L, D] <- cat(embeddings [B, D], queue[:L - B])."""
    B = embeddings.shape[0]
    return jnp.concatenate([embeddings.astype(queue.dtype), queue[:queue.shape[0] - B]])


class SwAV(Method):
    num_views = (2, 64)
    state_config_keys = ("swav.",)

    def config_section(self):
        s = ml_collections.ConfigDict()
        s.num_prototypes = 3000            # --nmb_prototypes
        s.epsilon = 0.05                   # Sinkhorn's entropic regularisation
        s.sinkhorn_iterations = 3
        s.crops_for_assign = (0, 1)        # 0-based views whose codes are predicted
        s.queue_length = 0                 # global queue of past embeddings (0: none)
        s.epoch_queue_starts = 15          # the queue fills from this epoch on
        s.freeze_prototypes_niters = 313   # prototypes get no gradient before this step
        return "swav", s

    def runlocal(self, c) -> None:
        s = c.swav
        s.num_prototypes = 30
        if s.queue_length > 0:             # exercised in a 20-step run: full after 4 steps
            s.queue_length, s.epoch_queue_starts = 4 * c.batch_size, 0
        s.freeze_prototypes_niters = min(s.freeze_prototypes_niters, 3)
        for name in view_names(c.aug):           # local crops at half the (shrunk) image size
            if c.aug[name].get("image_size") is not None:
                c.aug[name].image_size = max(4, c.dataset.image_size // 2)

    def validate(self, config, ctx) -> None:
        super().validate(config, ctx)
        s, V = config.swav, len(view_names(config.aug))
        if s.num_prototypes < 1:
            raise UserError(f"swav.num_prototypes={s.num_prototypes} must be >= 1.")
        if not s.epsilon > 0 or s.sinkhorn_iterations < 1:
            raise UserError(f"swav.epsilon={s.epsilon} must be > 0 and swav.sinkhorn_iterations"
                            f"={s.sinkhorn_iterations} >= 1.")
        crops = tuple(s.crops_for_assign)
        if not crops or len(set(crops)) != len(crops) or not all(0 <= c < V for c in crops):
            raise UserError(f"swav.crops_for_assign={crops} must be distinct view indices in "
                            f"[0, {V}) (0-based: (0, 1) = view1 and view2).")
        B = config.batch_size
        if s.queue_length < 0 or s.queue_length % B:
            raise UserError(f"swav.queue_length={s.queue_length} must be a multiple of "
                            f"batch_size={B} (the global batch is pushed each step), e.g. "
                            f"--config.swav.queue_length={s.queue_length // B * B}.")
        if s.epoch_queue_starts < 0 or s.freeze_prototypes_niters < 0:
            raise UserError("swav.epoch_queue_starts and swav.freeze_prototypes_niters must be "
                            ">= 0.")

    def build_network(self, config, num_classes: int):
        from simclr_jax.models import build_backbone
        from simclr_jax.models.heads import TORCH_LINEAR_INIT, MLPHead
        backbone = build_backbone(config.model)
        h = config.head
        hidden = h.hidden_dim if h.hidden_dim > 0 else backbone.num_features
        projector = MLPHead(hidden_dims=(hidden,) * (h.num_layers - 1), out_dim=h.out_dim,
                            use_bn=True, use_bias=True, last_bn=False,
                            bn_group_size=config.model.get("bn_group_size"),
                            kernel_init=TORCH_LINEAR_INIT)
        return PrototypeNetwork(backbone=backbone, projector=projector,
                                num_prototypes=config.swav.num_prototypes,
                                num_classes=num_classes if config.probe.enabled else 0)

    def init_state(self, config, network, variables, rng, ctx) -> dict:
        """The queue [A, L, D] of the A coded views, zeros (empty) until it fills."""
        L = config.swav.queue_length
        if L == 0:
            return {}
        A = len(config.swav.crops_for_assign)
        return {"queue": jnp.zeros((A, L, config.head.out_dim), jnp.float32)}

    def compute_loss(self, network, config, params, state, batch, rng, ctx):
        s = config.swav
        views = [batch[name] for name in view_names(config.aug)]
        V, B = len(views), views[0].shape[0]
        out, stats = common.apply_train(network, params, state.batch_stats,
                                        resolution_groups(views), method="multi_crop")
        scores = out["scores"].reshape(V, B, -1)                                  # [V, B, K]
        proj = jax.lax.stop_gradient(out["proj"]).reshape(V, B, -1)               # [V, B, D]
        crops = tuple(s.crops_for_assign)
        ms = state.method_state
        codes, metrics = [], {}
        if "queue" in ms:
            prototypes = jax.lax.stop_gradient(params["prototypes"]["kernel"])    # [D, K]
            filling = state.step // ctx.steps_per_epoch >= s.epoch_queue_starts
            in_use = jnp.zeros((), bool)
            queues = []
            for i, c in enumerate(crops):
                q = ms["queue"][i]                                                # [L, D]
                in_use = in_use | (filling & jnp.any(q[-1] != 0))   # full: its last row set
                codes.append(codes_with_queue(scores[c], q @ prototypes, in_use, s.epsilon,
                                              s.sinkhorn_iterations))
                queues.append(jnp.where(filling, push(q, proj[c]), q))
            ms = {**ms, "queue": jnp.stack(queues)}
            metrics["queue_in_use"] = in_use.astype(jnp.float32)
        else:
            codes = [losses.sinkhorn(scores[c], s.epsilon, s.sinkhorn_iterations)
                     for c in crops]
        codes = jnp.stack(codes)                                                  # [A, B, K]
        loss = losses.swapped_prediction(scores, codes, crops, config.loss.temperature)
        metrics["swap_top1"], metrics["swap_top1_chance"] = losses.swapped_prediction_top1(
            scores, codes, crops)
        p_loss, p_metrics = self._probe(out, batch["label"], crops, V, B)
        return loss + p_loss, (stats, ms, {"loss": loss, **metrics, **p_metrics})

    @staticmethod
    def _probe(out, labels, crops, V, B):
        """The online probe on the coded (global) views' features."""
        if "probe_logits" not in out:
            return 0.0, {}
        logits = out["probe_logits"].reshape(V, B, -1)
        sub = {"probe_logits": jnp.concatenate([logits[c] for c in crops])}
        return common.probe_loss(sub, labels, num_views=len(crops))

    def after_update(self, network, config, state, ctx):
        """The prototypes back to unit norm: what the reference's next iteration sees."""
        params = dict(state.params)
        params["prototypes"] = {"kernel": unit_rows(params["prototypes"]["kernel"])}
        return state.replace(params=params), {}

    def param_groups(self, config, ctx) -> tuple:
        groups = probe_group(config) + frozen_backbone_groups(config)
        n = config.swav.freeze_prototypes_niters
        if n > 0:
            groups += (ParamGroup(("prototypes",), frozen_until_step=n),)
        return groups


METHOD = SwAV()
