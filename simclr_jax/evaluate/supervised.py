"""The supervised loop shared by linear evaluation, fine-tuning and distillation.

Every protocol is "a frozen part + a trainable part, one jitted step over the mesh, an exact
masked evaluation pass, results to JSON and TensorBoard". They differ only in their `Task`
(how the loss and the logits are computed), so the loop, the step and the evaluation live here.

What cannot change is kept out of reach: the optimiser and the gradient see `state.params` only;
`state.frozen` (a pretrained backbone, a teacher) is read by the task and passed through unchanged,
so it stays bit-identical however the task is written.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
from typing import Any, Callable, Iterator, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers, periodic_actions

from simclr_jax import checkpoint, losses, parallel
from simclr_jax.data import pipeline
from simclr_jax.state import select_tree, tree_all_finite
from simclr_jax.guard import DivergenceGuard
from simclr_jax.train import mean_metrics
from simclr_jax.workdir import as_path
from simclr_jax.errors import UserError


@flax.struct.dataclass
class SupervisedState:
    step: jax.Array      # [] int32 optimizer steps taken
    params: Any          # the trainable parameters: the only pytree the optimiser updates
    batch_stats: Any     # BN statistics of the trainable part ({} when its BN runs in eval mode)
    opt_state: Any
    rng: jax.Array       # [2] uint32; per-step keys are fold_in(rng, step)
    frozen: Any          # {"model": frozen part of the classifier} and/or {"teacher": variables}

    def to_dict(self) -> dict:
        """Checkpointable view (empty subtrees left out; orbax needs no placeholders for them)."""
        return {k: v for k, v in vars(self).items() if jax.tree.leaves(v)}

    def replace_from_dict(self, d: dict) -> "SupervisedState":
        return self.replace(**d)


def create_state(params, batch_stats, frozen, tx, rng, mesh) -> SupervisedState:
    """Host/device trees -> a state replicated over the mesh (frozen values copied bit-exactly)."""
    state = SupervisedState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=batch_stats, opt_state=tx.init(params), rng=rng,
                            frozen=frozen)
    return parallel.replicate(mesh, state)


@dataclasses.dataclass(frozen=True)
class Task:
    """loss(params, batch_stats, frozen, batch {"image", "label"}, rng)
           -> (loss, (new batch_stats, metrics dict))
    predict(params, batch_stats, frozen, images [B, H, W, 3])
           -> {"logits": [B, C]} (+ "teacher_logits": [B, C] to measure agreement)"""
    loss: Callable
    predict: Callable


def classification_task(forward: Callable) -> Task:
    """Cross-entropy on labels. forward(params, batch_stats, frozen, images, train)
    -> (logits [B, C], new batch_stats)."""
    def loss(params, batch_stats, frozen, batch, rng):
        logits, new_stats = forward(params, batch_stats, frozen, batch["image"], True)
        ce = losses.softmax_cross_entropy(logits, batch["label"])
        acc = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        return ce, (new_stats, {"train_accuracy": acc})

    def predict(params, batch_stats, frozen, images):
        return {"logits": forward(params, batch_stats, frozen, images, False)[0]}

    return Task(loss=loss, predict=predict)


# ----------------------------------------------------------------------------- steps

def _train_step(state: SupervisedState, batch, *, task: Task, tx, lr_schedule):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        return task.loss(params, state.batch_stats, state.frozen, batch, rng)

    (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & tree_all_finite(grads)
    # A non-finite step leaves the state as it was; the host stops at the next log step.
    new = select_tree(finite, dict(params=params, batch_stats=batch_stats, opt_state=opt_state),
                      dict(params=state.params, batch_stats=state.batch_stats,
                           opt_state=state.opt_state))
    metrics = {**metrics, "loss": loss, "learning_rate": lr_schedule(state.step),
               "grad_norm": optax.global_norm(grads),
               "nonfinite": 1.0 - finite.astype(jnp.float32)}
    return state.replace(step=state.step + 1, **new), metrics


def make_train_step(mesh, task: Task, tx, lr_schedule):
    """(state, batch) -> (state, metrics): state replicated and donated, batch sharded."""
    replicated = parallel.replicated_sharding(mesh)
    return jax.jit(functools.partial(_train_step, task=task, tx=tx, lr_schedule=lr_schedule),
                   in_shardings=(replicated, parallel.batch_sharding(mesh)),
                   out_shardings=(replicated, replicated), donate_argnums=0)


def _eval_step(state: SupervisedState, batch, *, task: Task):
    out = task.predict(state.params, state.batch_stats, state.frozen, batch["image"])
    logits, labels = out["logits"], batch["label"]                     # [B, C], [B]
    mask = batch["mask"].astype(jnp.int32)                              # [B] 0 on padding
    count = lambda hits: jnp.sum(hits.astype(jnp.int32) * mask)        # noqa: E731
    sums = {"num_examples": jnp.sum(mask),
            "top1_correct": count(losses.topk_correct(logits, labels, 1))}
    if logits.shape[-1] >= 5:
        sums["top5_correct"] = count(losses.topk_correct(logits, labels, 5))
    if "teacher_logits" in out:
        teacher = out["teacher_logits"]                                   # [B, C]
        sums["agree"] = count(jnp.argmax(logits, -1) == jnp.argmax(teacher, -1))
        sums["teacher_top1_correct"] = count(losses.topk_correct(teacher, labels, 1))
        votes = jax.nn.one_hot(jnp.argmax(teacher, -1), teacher.shape[-1], dtype=jnp.int32)
        sums["teacher_class_counts"] = jnp.sum(votes * mask[:, None], axis=0)   # [C]
    return sums


def make_eval_step(mesh, task: Task):
    """(state, batch with "mask") -> replicated int32 counts over the real (unmasked) rows."""
    return jax.jit(functools.partial(_eval_step, task=task),
                   in_shardings=(parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)),
                   out_shardings=parallel.replicated_sharding(mesh))


def evaluate(eval_step, state: SupervisedState, batches) -> dict:
    """Exact accuracy over one pass of padded eval batches: every real example counted once.

    Returns {"top1", ["top5" (>= 5 classes)], "num_eval_examples"} and, with a teacher,
    "agreement" (fraction of examples where student and teacher argmax agree), "teacher_top1" and
    "agreement_constant_baseline" (the fraction of the teacher's most frequent class: the
    agreement of a student that always predicts it).
    """
    totals = None
    throttle = parallel.DispatchThrottle()
    for batch in batches:
        sums = throttle(eval_step(state, batch))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise UserError("the evaluation split produced no batches; check dataset.eval_split.")
    totals = jax.device_get(totals)
    class_counts = totals.pop("teacher_class_counts", None)
    totals = {k: int(v) for k, v in totals.items()}
    n = totals["num_examples"]
    if n == 0:
        raise UserError("the evaluation split is empty.")
    out = {"top1": totals["top1_correct"] / n, "num_eval_examples": n}
    if "top5_correct" in totals:
        out["top5"] = totals["top5_correct"] / n
    if "agree" in totals:
        out["agreement"] = totals["agree"] / n
        out["teacher_top1"] = totals["teacher_top1_correct"] / n
        # The agreement a constant student would reach (the teacher's most frequent class).
        out["agreement_constant_baseline"] = int(np.max(class_counts)) / n
    return out


# ----------------------------------------------------------------------------- data

def training_view(view_cfg, normalize: str):
    """A copy of the protocol's training view (random resized crop + flip in the presets),
    normalised like the images the encoder was pretrained on."""
    view = copy.deepcopy(view_cfg)
    view.normalize = normalize
    return view


def resolve_dataset(ds, inherit: dict):
    """The protocol's dataset: fields left unset (None) come from `inherit` (the pretraining /
    teacher run). A different dataset name inherits no splits: train defaults to "train" and
    eval_split must be given."""
    same = ds.get("name") in (None, inherit.get("name"))
    out = {}
    for key in ("name", "data_dir", "train_split", "eval_split", "image_size"):
        value = ds.get(key)
        if value is None and (same or key in ("data_dir", "image_size")):
            value = inherit.get(key)
        out[key] = value
    if out["train_split"] is None:
        out["train_split"] = "train"
    if not out["name"]:
        raise UserError("no dataset: set --config.dataset.name (or leave it unset to use the "
                         "pretraining run's dataset).")
    if not out["eval_split"]:
        raise UserError(f"set --config.dataset.eval_split for {out['name']!r} (e.g. 'test' or "
                         f"'validation').")
    if not out["image_size"]:
        raise UserError("set --config.dataset.image_size.")
    return ml_collections.ConfigDict(out)


def require_labels(source, what: str) -> None:
    if not source.num_classes:
        raise UserError(f"{what} needs a labelled dataset, but {source.name}:{source.split} has "
                         f"no labels; point --config.dataset.name/train_split at labelled data.")


def train_batches(source, view_cfg, *, batch_size: int, image_size: int, seed: int, mesh,
                  start_step: int = 0) -> Iterator[dict]:
    """{"image": [B, S, S, 3], "label": [B]} global batches, one augmented view per example."""
    aug = ml_collections.ConfigDict({"view1": view_cfg})
    for b in pipeline.pretrain_batches(source, aug, global_batch_size=batch_size,
                                       image_size=image_size, seed=seed, start_step=start_step,
                                       mesh=mesh, num_views=1):
        yield {"image": b["view1"], "label": b["label"]}


def eval_batches(source, *, batch_size: int, image_size: int, normalize: str, mesh):
    """One exact pass: {"image", "label", "mask"}, the last batch padded (mask False)."""
    return pipeline.eval_batches(source, global_batch_size=batch_size, image_size=image_size,
                                 mesh=mesh, normalize=normalize)


def inherit_from_pretraining(pre) -> dict:
    """What a protocol's dataset defaults to: the pretraining run's data, scored on the split
    its kNN monitor used."""
    return {"name": pre.dataset.name, "data_dir": pre.dataset.get("data_dir"),
            "train_split": pre.dataset.train_split, "eval_split": pre.dataset.knn_test_split,
            "image_size": pre.dataset.image_size}


def make_protocol_mesh(config):
    """The device mesh, after checking that both batch sizes split evenly over it."""
    mesh = parallel.make_mesh()
    parallel.check_batch_divisible(config.batch_size, mesh)
    parallel.check_batch_divisible(config.eval.batch_size, mesh, "eval.batch_size")
    return mesh


# ----------------------------------------------------------------------------- loop

def fit(state: SupervisedState, *, train_step, eval_step, train_batches_from: Callable,
        eval_batches_fn: Callable, total_steps: int, workdir: Optional[str] = None,
        writer=None, log_every: int = 50, checkpoint_every: Optional[int] = None,
        keep_checkpoints: int = 2, eval_every: Optional[int] = None,
        eval_at_start: bool = False, image_normalize: Optional[str] = None):
    """Train `state` to `total_steps`, then evaluate. Returns (state, results).

    train_batches_from(start_step) -> iterator of train batches; eval_batches_fn() -> one pass.
    With a workdir, checkpoints go to workdir/checkpoints and a rerun resumes from the latest.
    eval_at_start also scores the state as given (before training) as "<metric>_init".
    With a writer: progress (steps/s, ETA, time in evaluation and checkpoints) and, with
    `image_normalize`, the first training images as TensorBoard's "train_inputs".
    """
    results: dict = {}
    report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=log_every)
    if eval_at_start:
        init = evaluate(eval_step, state, eval_batches_fn())
        results.update({f"{k}_init": v for k, v in init.items() if k != "num_eval_examples"})
    manager, saving = None, None    # saving: the checkpoint save in flight
    if workdir is not None:
        manager = checkpoint.make_manager(workdir, keep_checkpoints)
        restored = checkpoint.restore_latest(manager, state)
        if restored is not None:
            state = restored
            logging.info("Resumed from checkpoint at step %d.", int(state.step))
    start = int(jax.device_get(state.step))
    # The pretraining loop's guard with the ratio rule off: a non-finite step stops the run
    # with the same message (naming the last good checkpoint) and is never saved.
    guard = DivergenceGuard.start(0.0, manager.directory if manager else "(not saved)",
                                  start if start > 0 else None,
                                  float(optax.global_norm(state.params)))
    last_summary_step = start
    checkpoint_every = checkpoint_every or total_steps
    batches = train_batches_from(start) if start < total_steps else iter(())
    history: list = []
    throttle = parallel.DispatchThrottle()
    try:
        for step in range(start, total_steps):
            batch = next(batches)
            if step == 0 and writer is not None and image_normalize is not None:
                from simclr_jax.train import image_rows
                writer.write_images(0, {"train_inputs": image_rows([batch["image"]],
                                                                   image_normalize)})
            state, metrics = train_step(state, batch)
            history.append(throttle(metrics))
            done = step + 1
            report(done)
            at_end = done == total_steps
            if done % log_every == 0 or at_end or done % checkpoint_every == 0:
                summary = mean_metrics(history)
                history = []
                guard.check(summary, last_summary_step, done)
                last_summary_step = done
                if writer is not None:
                    writer.write_scalars(done, {f"train/{k}": v for k, v in summary.items()})
                results["train_loss"] = summary["loss"]
                if "train_accuracy" in summary:
                    results["train_accuracy"] = summary["train_accuracy"]
            if eval_every and done % eval_every == 0 and not at_end:
                with report.timed("eval"):
                    metrics = evaluate(eval_step, state, eval_batches_fn())
                if writer is not None:
                    writer.write_scalars(done, {f"eval/{k}": v for k, v in metrics.items()})
            if manager is not None and (done % checkpoint_every == 0 or at_end):
                with report.timed("checkpoint"):
                    saving = checkpoint.save(manager, state, saving)
                guard.saved(done)
    finally:
        if manager is not None:
            manager.wait_until_finished()
    final = evaluate(eval_step, state, eval_batches_fn())
    results.update(final)
    results["step"] = int(jax.device_get(state.step))
    if writer is not None:
        writer.write_scalars(results["step"], {f"eval/{k}": v for k, v in final.items()})
        writer.flush()
    return state, results


def protocol_optimizer(config, num_train_examples: int):
    """(total_steps, lr schedule, optax optimizer) of a protocol config."""
    from simclr_jax import optim, train
    total_steps, _, schedule = train.make_schedules(config, num_train_examples)
    return total_steps, schedule, optim.make_optimizer(config.optimizer, schedule)


def fit_protocol(config, state: SupervisedState, task: Task, *, tx, schedule, mesh,
                 train_source, eval_source, image_size: int, normalize: str,
                 total_steps: int, workdir: str, meta: dict, eval_at_start: bool = False):
    """`fit` with the protocol config's batches, logging, checkpointing and evaluation cadence:
    the loop every protocol (linear eval, fine-tuning, distillation) shares. Records the config
    and the classifier description (`meta`) in the workdir first."""
    from simclr_jax.evaluate import classifier
    write_config(workdir, config)
    classifier.write_description(workdir, meta)
    view = training_view(config.aug.view1, normalize)
    return fit(
        state, train_step=make_train_step(mesh, task, tx, schedule),
        eval_step=make_eval_step(mesh, task),
        train_batches_from=lambda start: train_batches(
            train_source, view, batch_size=config.batch_size, image_size=image_size,
            seed=config.seed, mesh=mesh, start_step=start),
        eval_batches_fn=lambda: eval_batches(
            eval_source, batch_size=config.eval.batch_size, image_size=image_size,
            normalize=normalize, mesh=mesh),
        total_steps=total_steps, workdir=workdir, writer=make_writer(workdir),
        log_every=config.log_every_steps, checkpoint_every=config.checkpoint_every_steps,
        keep_checkpoints=config.keep_checkpoints, eval_every=config.eval.get("every_steps"),
        eval_at_start=eval_at_start, image_normalize=normalize)


def train_classifier(config, workdir: str, *, protocol: str, meta: dict, arrays, ds, mesh,
                     train_source, eval_source, normalize: str, make_state, make_task,
                     results_file: str, extra_results: dict) -> dict:
    """What linear evaluation and fine-tuning share once their classifier is described: build
    it, initialise it from the pretraining arrays, train and evaluate it (`fit_protocol`) and
    write workdir/results_file. make_state(module, variables, tx, rng) -> SupervisedState and
    make_task(module) -> Task are where the two protocols differ."""
    from simclr_jax.evaluate import classifier
    module = classifier.build(meta)
    rng = jax.random.PRNGKey(config.seed)
    variables = classifier.init_variables(module, arrays, rng, ds.image_size)
    total_steps, schedule, tx = protocol_optimizer(config, train_source.num_examples)
    state = make_state(module, variables, tx, jax.random.fold_in(rng, 1))
    logging.info("%s: %d steps on %d examples of %s:%s, eval on %s (%d examples).", protocol,
                 total_steps, train_source.num_examples, ds.name, ds.train_split,
                 ds.eval_split, eval_source.num_examples)
    state, results = fit_protocol(
        config, state, make_task(module), tx=tx, schedule=schedule, mesh=mesh,
        train_source=train_source, eval_source=eval_source, image_size=ds.image_size,
        normalize=normalize, total_steps=total_steps, workdir=workdir, meta=meta)
    results.update({"protocol": protocol, "init_from": config.init_from,
                    "pretrain_step": int(jax.device_get(arrays["step"])),
                    "dataset": ds.name, "eval_split": ds.eval_split,
                    "eval_split_size": eval_source.num_examples, **extra_results})
    write_json(workdir, results_file, results)
    return results


# ----------------------------------------------------------------------------- outputs

def make_writer(workdir: str):
    return metric_writers.create_default_writer(str(workdir),
                                                just_logging=jax.process_index() != 0)


def write_json(workdir: str, name: str, payload: dict) -> str:
    """workdir/name (chief only); returns the path."""
    path = as_path(workdir) / name
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return str(path)


def write_config(workdir: str, config) -> None:
    if jax.process_index() == 0:
        as_path(workdir).mkdir(parents=True, exist_ok=True)
        (as_path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2))
