"""Pretraining loop: data -> TrainState -> one jitted step -> metrics, checkpoints, kNN evals.

`train_and_evaluate(config, workdir)` is the whole job; `main.py` only parses flags.
The step is a pure function of (state, batch); everything that changes lives in the state,
so stopping and resuming reproduces an uninterrupted run exactly.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metric_writers, periodic_actions

from simclr_jax import checkpoint, optim, parallel, preemption
from simclr_jax.config_validation import validate_config
from simclr_jax.data import pipeline, sources
from simclr_jax.evaluate import knn
from simclr_jax.methods import get_method
from simclr_jax.methods.network import SSLNetwork
from simclr_jax.models import frozen_param_mask
from simclr_jax.state import TrainState, select_tree, tree_all_finite


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf; the state that produced it was not saved."""


# ----------------------------------------------------------------------------- schedules

def make_schedules(config, num_train_examples: int):
    """All durations resolved in one place: (total_steps, warmup_steps, lr_schedule).

    num_steps, when set, overrides num_epochs (so `--config.num_steps=N` shortens any preset).
    """
    steps_per_epoch = max(1, num_train_examples // config.batch_size)
    num_steps = config.get("num_steps")
    total_steps = optim.resolve_steps(num_epochs=None if num_steps else config.get("num_epochs"),
                                      num_steps=num_steps,
                                      examples_per_epoch=num_train_examples,
                                      batch_size=config.batch_size)
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    peak_lr = optim.scaled_lr(config.optimizer.base_lr, config.batch_size,
                              config.optimizer.lr_scaling)
    schedule = optim.make_lr_schedule(config.get("lr_schedule", "cosine"), peak_lr=peak_lr,
                                      total_steps=total_steps, warmup_steps=warmup_steps,
                                      boundaries=tuple(config.get("lr_boundaries_epochs", ()) or ()),
                                      steps_per_epoch=steps_per_epoch)
    return total_steps, warmup_steps, schedule


# ----------------------------------------------------------------------------- state

def create_train_state(config, network, tx, method, mesh, rng) -> TrainState:
    """Initialise parameters on the mesh (replicated). A pure function of config.seed."""
    size = config.dataset.image_size
    init_rng, extras_rng, state_rng = jax.random.split(rng, 3)
    # The init batch must divide into BN groups; 2 * group (or 2) examples suffice.
    group = config.model.get("bn_group_size") or 1
    dummy = jnp.zeros((2 * group, size, size, 3), jnp.float32)

    def init():
        variables = network.init({"params": init_rng}, dummy, train=True)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        extras = method.init_extras(config, network, variables, extras_rng)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                          opt_state=tx.init(params), rng=state_rng, **extras)

    return jax.jit(init, out_shardings=parallel.replicated(mesh))()


# ----------------------------------------------------------------------------- step

def train_step(state: TrainState, batch, *, method, network, config, tx, lr_schedule,
               total_steps):
    """One optimisation step over the GLOBAL batch. Pure: (state, batch) -> (state, metrics).

    A non-finite loss or gradient leaves the state unchanged and raises the `nonfinite` metric,
    so the host can stop with the last good state still intact.
    """
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        return method.compute_loss(network, config, params, state, batch, rng)

    (loss, (batch_stats, extras, metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, **extras)
    new_state = method.after_update(network, config, new_state, total_steps)

    finite = jnp.isfinite(loss) & tree_all_finite(grads) & tree_all_finite(params)
    new_state = select_tree(finite, new_state, state)
    metrics = {**metrics, "loss": loss, "learning_rate": lr_schedule(state.step),
               "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params),
               "nonfinite": 1.0 - finite.astype(jnp.float32)}
    if state.target_params is not None:
        metrics["ema_momentum"] = optim.ema_momentum(state.step, total_steps,
                                                     config.momentum.base, config.momentum.schedule)
    return new_state, metrics


def jit_train_step(mesh, **static):
    """The step jitted with explicit shardings: state replicated and donated, batch sharded."""
    return jax.jit(functools.partial(train_step, **static),
                   in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
                   out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
                   donate_argnums=0)


# ----------------------------------------------------------------------------- evaluation

def make_feature_fn(network: SSLNetwork, mesh):
    """Backbone features in inference mode (BN running statistics), jitted over the mesh."""
    @functools.partial(jax.jit, in_shardings=(parallel.replicated(mesh), parallel.replicated(mesh),
                                              parallel.batch_sharding(mesh)),
                       out_shardings=parallel.batch_sharding(mesh))
    def features(params, batch_stats, images):
        return network.apply({"params": params, "batch_stats": batch_stats}, images,
                             method=SSLNetwork.encode)
    return features


class KnnEvaluator:
    """Weighted kNN (InstDisc) of backbone features: train split as memory bank, test split scored."""

    def __init__(self, config, mesh, network):
        ds = config.dataset
        self.enabled = bool(ds.knn_train_split) and bool(ds.knn_test_split)
        if not self.enabled:
            return
        self.bank = sources.get_source(ds.name, ds.knn_train_split, ds.get("data_dir"))
        self.test = sources.get_source(ds.name, ds.knn_test_split, ds.get("data_dir"))
        if not self.bank.num_classes:
            raise ValueError(f"kNN evaluation needs labels but {ds.name}:{ds.knn_train_split} "
                             f"has none; set --config.dataset.knn_train_split='' to disable it.")
        self.config, self.mesh = config, mesh
        self.features = make_feature_fn(network, mesh)

    def _extract(self, source, params, batch_stats):
        batches = pipeline.eval_batches(source, global_batch_size=self.config.eval.batch_size,
                                        image_size=self.config.dataset.image_size, mesh=self.mesh,
                                        normalize=self.config.aug.view1.normalize)
        fn = lambda images: self.features(params, batch_stats, images)
        return knn.extract_features(fn, batches)

    def __call__(self, params, batch_stats) -> dict:
        bank_x, bank_y = self._extract(self.bank, params, batch_stats)
        test_x, test_y = self._extract(self.test, params, batch_stats)
        acc = knn.knn_accuracy(bank_x, bank_y, test_x, test_y, num_classes=self.bank.num_classes,
                               k=self.config.eval.knn_k,
                               temperature=self.config.eval.knn_temperature)
        return {f"knn_{k}": float(v) for k, v in acc.items()}


# ----------------------------------------------------------------------------- images

def view_pairs_grid(batch, normalize: str, n: int = 8) -> np.ndarray:
    """[1, 2H, nW, 3] image: row 1 = view 1, row 2 = view 2 of the first n examples this process
    holds (on process 0: the first n of the global batch). No cross-host transfer."""
    v1, v2 = (parallel.local_rows(batch[k], n) for k in ("view1", "view2"))
    if normalize == "imagenet":
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        v1, v2 = v1 * std + mean, v2 * std + mean
    rows = [np.concatenate(list(v), axis=1) for v in (v1, v2)]
    return np.clip(np.concatenate(rows, axis=0), 0.0, 1.0)[None]


# ----------------------------------------------------------------------------- loop

def _mean_metrics(history: list[dict]) -> dict:
    host = jax.device_get(history)
    return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def train_and_evaluate(config, workdir: str, stop_after_steps: int | None = None) -> dict:
    """Pretrain with `config`, writing TensorBoard events and checkpoints under `workdir`.

    Resumes automatically from the latest checkpoint in `workdir`. `stop_after_steps` ends this
    invocation (with a checkpoint) after that many steps, for time-limited job slots; the next
    invocation resumes. SIGTERM does the same at a step all processes agree on. Returns the
    final metrics (including kNN accuracy of the learned encoder and of the same encoder at
    initialisation); "stopped" is True when the run ended before total_steps.
    """
    validate_config(config)
    stop = preemption.StopSignal()  # from here on, SIGTERM stops at the first step boundary
    os.makedirs(workdir, exist_ok=True)
    mesh = parallel.make_mesh()
    parallel.check_batch_divisible(config.batch_size, mesh)
    method = get_method(config.method)

    train_source = sources.get_source(config.dataset.name, config.dataset.train_split,
                                      config.dataset.get("data_dir"))
    if train_source.num_examples < config.batch_size:
        raise ValueError(f"the training split has {train_source.num_examples} examples, fewer "
                         f"than one batch ({config.batch_size}); lower --config.batch_size.")
    method.validate(config, train_source.num_examples)
    num_classes = train_source.num_classes or 0
    total_steps, warmup_steps, lr_schedule = make_schedules(config, train_source.num_examples)

    network = method.build_network(config, num_classes)
    tx = optim.make_optimizer(config.optimizer, lr_schedule,
                              frozen_mask=lambda p: frozen_param_mask(config.model, p))
    init_rng = jax.random.PRNGKey(config.seed)
    state = create_train_state(config, network, tx, method, mesh, init_rng)

    manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, state)
    if restored is not None:
        state = restored
        logging.info("Resumed from checkpoint at step %d.", int(state.step))
    start_step = int(jax.device_get(state.step))

    is_chief = jax.process_index() == 0
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
    if is_chief:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        if start_step == 0:
            writer.write_hparams({"total_steps": total_steps, "warmup_steps": warmup_steps,
                                  "num_devices": jax.device_count(),
                                  "train_examples": train_source.num_examples})

    batches = pipeline.pretrain_batches(train_source, config.aug,
                                        global_batch_size=config.batch_size,
                                        image_size=config.dataset.image_size, seed=config.seed,
                                        start_step=start_step, mesh=mesh)
    step_fn = jit_train_step(mesh, method=method, network=network, config=config, tx=tx,
                             lr_schedule=lr_schedule, total_steps=total_steps)
    evaluator = KnnEvaluator(config, mesh, network)
    report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
    throttle = parallel.DispatchThrottle()
    history: list[dict] = []
    summary: dict = {}
    last_log_time, last_log_step = time.time(), start_step

    def save(wait=False):
        checkpoint.save(manager, state, wait=wait)

    try:
        for step in range(start_step, total_steps):
            batch = next(batches)
            if step == start_step == 0 and is_chief and config.get("log_images", True):
                writer.write_images(0, {"augmented_view_pairs": view_pairs_grid(
                    batch, config.aug.view1.normalize)})
            state, metrics = step_fn(state, batch)
            history.append(throttle(metrics))
            report(step + 1)
            done = step + 1
            at_end = done == total_steps
            if stop_after_steps is not None and done - start_step >= stop_after_steps:
                stop.request()
            stopping = stop.should_stop(done) and not at_end
            # Metrics are pulled to the host (a sync) only at log and checkpoint steps, and the
            # non-finite check runs before any checkpoint is written.
            if (done % config.log_every_steps == 0 or done % config.checkpoint_every_steps == 0
                    or at_end or stopping):
                summary = _mean_metrics(history)
                history = []
                if summary["nonfinite"] > 0:
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient between steps {last_log_step} and {done}; "
                        f"the state was not updated by those steps and not saved. The last good "
                        f"checkpoint in {workdir} is kept: lower the learning rate "
                        f"(--config.optimizer.base_lr) or check the data, then re-run to resume.")
                elapsed = time.time() - last_log_time
                images = (done - last_log_step) * config.batch_size
                summary["images_per_sec_per_device"] = images / elapsed / jax.device_count()
                last_log_time, last_log_step = time.time(), done
                writer.write_scalars(done, summary)
            if evaluator.enabled and (done % config.eval.every_steps == 0 or at_end):
                knn_metrics = evaluator(state.params, state.batch_stats)
                writer.write_scalars(done, knn_metrics)
                summary.update(knn_metrics)
                logging.info("step %d: %s", done, knn_metrics)
            if done % config.checkpoint_every_steps == 0 or at_end or stopping:
                save()
            if stopping:
                break
    finally:
        manager.wait_until_finished()
        stop.restore()

    final_step = int(jax.device_get(state.step))
    if final_step == total_steps and evaluator.enabled and config.eval.get("knn_at_init", True):
        init_state = create_train_state(config, network, tx, method, mesh, init_rng)
        init_metrics = {f"{k}_init": v
                        for k, v in evaluator(init_state.params, init_state.batch_stats).items()}
        writer.write_scalars(final_step, init_metrics)
        summary.update(init_metrics)
    writer.flush()
    summary["step"] = final_step
    summary["total_steps"] = total_steps
    summary["stopped"] = final_step < total_steps
    if is_chief:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    return summary
