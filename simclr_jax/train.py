"""Pretraining loop: data -> TrainState -> one jitted step -> metrics, checkpoints, kNN evals.

`train_and_evaluate(config, workdir)` is the whole job; `main.py` only parses flags.
The step is a pure function of (state, batch); everything that changes lives in the state,
so stopping and resuming reproduces an uninterrupted run exactly.
"""
from __future__ import annotations

import functools
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from simclr_jax import checkpoint, init_weights, negative_control, optim, parallel
from simclr_jax import preemption, reporting
from simclr_jax import workdir as workdir_lib
from simclr_jax.config_validation import check_splits, validate_config
from simclr_jax.data import aug_presets, augment_jax, device_dataset, normalization, sources
from simclr_jax.errors import NonFiniteLossError, UserError  # noqa: F401 (re-exported)
from simclr_jax.evaluate import knn
from simclr_jax.guard import DivergenceGuard
from simclr_jax.methods import Context, encoder_network, get_method
from simclr_jax.state import TrainState, select_tree, tree_all_finite


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
                                      boundaries=tuple(config.get("lr_boundaries_epochs") or ()),
                                      factors=tuple(config.get("lr_boundary_factors") or ()),
                                      steps_per_epoch=steps_per_epoch,
                                      warmup_start=config.get("lr_warmup_start", 0.0),
                                      final=config.get("lr_final", 0.0))
    return total_steps, warmup_steps, schedule


# ----------------------------------------------------------------------------- context

def make_context(config, num_train_examples: int, mesh=None) -> Context:
    """The static facts every method call sees (methods.Context)."""
    total_steps, _, _ = make_schedules(config, num_train_examples)
    return Context(total_steps=total_steps,
                   steps_per_epoch=max(1, num_train_examples // config.batch_size),
                   num_train_examples=num_train_examples,
                   global_batch_size=config.batch_size, mesh=mesh)


def make_optimizer(config, method, lr_schedule, ctx: Context):
    """The configured optimizer with the method's parameter groups (probe, frozen, fixed LR)."""
    peak_lr = optim.scaled_lr(config.optimizer.base_lr, config.batch_size,
                              config.optimizer.lr_scaling)
    # An all-False frozen mask still adds its (stateless) masked transform: the optimizer state
    # keeps the layout of checkpoints written before parameter groups.
    return optim.make_optimizer(config.optimizer, lr_schedule,
                                frozen_mask=lambda p: jax.tree.map(lambda _: False, p),
                                groups=method.param_groups(config, ctx), peak_lr=peak_lr,
                                total_steps=ctx.total_steps)


# ----------------------------------------------------------------------------- state

def _init_fn(config, network, tx, method, ctx: Context, rng):
    """A function (backbone=None) -> TrainState: initialise parameters and the method's state
    from rng; a given backbone (init_weights: config.init_from) replaces the online one before
    the method's state is made from the parameters."""
    init_rng, extras_rng, state_rng = jax.random.split(rng, 3)
    # The init batch must divide into BN groups; 2 * group (or 2) examples suffice.
    group = config.model.get("bn_group_size") or 1
    size = config.dataset.image_size
    dummy = jnp.zeros((2 * group, size, size, 3), jnp.float32)

    def init(backbone=None):
        variables = network.init({"params": init_rng}, dummy, train=True)
        if backbone is not None:
            variables = init_weights.graft_backbone(variables, backbone)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        method_state = method.init_state(config, network, variables, extras_rng, ctx)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                          opt_state=tx.init(params), rng=state_rng, method_state=method_state)

    return init


def state_sharding(config, network, tx, method, ctx: Context, mesh):
    """The TrainState's shardings: replicated, except what the method shards (e.g. a memory
    bank's rows over the "data" axis)."""
    abstract = jax.eval_shape(_init_fn(config, network, tx, method, ctx, jax.random.PRNGKey(0)))
    replicated = parallel.replicated_sharding(mesh)
    specs = method.state_sharding(config, ctx, abstract.method_state)
    if specs is None:
        method_sharding = jax.tree.map(lambda _: replicated, abstract.method_state)
    else:
        method_sharding = jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, spec),
                                       specs, is_leaf=lambda x: isinstance(
                                           x, jax.sharding.PartitionSpec))
    shardings = jax.tree.map(lambda _: replicated, abstract.replace(method_state=None))
    return shardings.replace(method_state=method_sharding)


def create_train_state(config, network, tx, method, mesh, rng, ctx: Context,
                       backbone=None) -> TrainState:
    """Initialise parameters on the mesh. A pure function of config.seed (and of `backbone`,
    the loaded config.init_from, passed as an argument rather than baked into the program)."""
    init = _init_fn(config, network, tx, method, ctx, rng)
    return jax.jit(init, out_shardings=state_sharding(config, network, tx, method, ctx, mesh))(
        backbone)


# ----------------------------------------------------------------------------- step

def train_step(state: TrainState, batch, *, method, network, config, tx, lr_schedule,
               ctx: Context):
    """One optimisation step over the GLOBAL batch. Pure: (state, batch) -> (state, metrics).

    A non-finite loss or gradient leaves the state unchanged and raises the `nonfinite` metric,
    so the host can stop with the last good state still intact.
    """
    rng = jax.random.fold_in(state.rng, state.step)
    if config.dataset.get("on_device"):   # examples, labels and every view made here
        batch = device_dataset.make_views(batch, config, state.step)
    elif config.aug.get("on_device"):  # uint8 host views -> finished views (colour, blur, ...)
        batch = augment_jax.augment_batch(batch, config.aug, config.seed, state.step)
    if config.get("break_positive_pairs"):   # a negative control (negative_control.py)
        batch = negative_control.break_positive_pairs(batch, aug_presets.view_names(config.aug))

    def loss_fn(params):
        return method.compute_loss(network, config, params, state, batch, rng, ctx)

    (loss, (batch_stats, method_state, metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, method_state=method_state)
    new_state, method_metrics = method.after_update(network, config, new_state, ctx)

    finite = jnp.isfinite(loss) & tree_all_finite(grads) & tree_all_finite(params)
    new_state = select_tree(finite, new_state, state)
    return new_state, {**metrics, **method_metrics, "total_loss": loss,
                       "learning_rate": lr_schedule(state.step),
                       "grad_norm": optax.global_norm(grads),
                       "param_norm": optax.global_norm(params),
                       "nonfinite": 1.0 - finite.astype(jnp.float32)}


def jit_train_step(mesh, *, method, network, config, tx, lr_schedule, ctx: Context):
    """The step jitted with explicit shardings: state replicated (or as the method shards it)
    and donated, batch sharded over the "data" axis (dataset.on_device: the batch is the
    replicated dataset; the step takes its rows)."""
    shardings = state_sharding(config, network, tx, method, ctx, mesh)
    replicated = parallel.replicated_sharding(mesh)
    batch_sharding = (replicated if config.dataset.get("on_device")
                      else parallel.batch_sharding(mesh))
    step = functools.partial(train_step, method=method, network=network, config=config, tx=tx,
                             lr_schedule=lr_schedule, ctx=ctx)
    return jax.jit(step, in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, replicated), donate_argnums=0)


def build_step(config, mesh, lr_schedule, total_steps: int, *, num_classes: int = 10,
               num_train_examples: int | None = None, tx=None):
    """(method, network, tx, initial state, jitted step, ctx) exactly as the trainer builds
    them, for tests and benchmarks that drive the step with their own batches."""
    method = get_method(config.method)
    n = num_train_examples or 100 * config.batch_size
    ctx = Context(total_steps=total_steps, steps_per_epoch=max(1, n // config.batch_size),
                  num_train_examples=n, global_batch_size=config.batch_size, mesh=mesh)
    network = method.build_network(config, num_classes)
    tx = tx if tx is not None else make_optimizer(config, method, lr_schedule, ctx)
    state = create_train_state(config, network, tx, method, mesh, jax.random.PRNGKey(0), ctx)
    step = jit_train_step(mesh, method=method, network=network, config=config, tx=tx,
                          lr_schedule=lr_schedule, ctx=ctx)
    return method, network, tx, state, step, ctx


# ----------------------------------------------------------------------------- evaluation

def make_knn_evaluator(config, mesh, method) -> knn.KnnEvaluator | None:
    """The pretraining kNN monitor from config.dataset/eval (on the method's encoder), or None
    when a split is unset."""
    ds = config.dataset
    if not (ds.knn_train_split and ds.knn_test_split):
        return None
    return knn.KnnEvaluator(
        encoder_network(method, config), mesh,
        bank=sources.get_source(ds.name, ds.knn_train_split, ds.get("data_dir")),
        test=sources.get_source(ds.name, ds.knn_test_split, ds.get("data_dir")),
        image_size=ds.image_size, batch_size=config.eval.batch_size, k=config.eval.knn_k,
        temperature=config.eval.knn_temperature, normalize=config.aug.view1.normalize,
        on_device=bool(ds.get("on_device")))


def score_knn(evaluator: knn.KnnEvaluator, method, config, state: TrainState,
              bn_batches: int = 0) -> dict:
    """kNN metrics of the method's encoder in `state`; with bn_batches > 0 its BN running
    statistics are first re-estimated on that many kNN-bank batches (the encoder at init)."""
    variables = method.encoder(config).variables(
        {"params": state.params, "batch_stats": state.batch_stats,
         "method_state": state.method_state})
    batch_stats = variables["batch_stats"]
    if bn_batches:
        batch_stats = evaluator.bank_batch_statistics(variables["params"], batch_stats,
                                                      bn_batches)
    return evaluator(variables["params"], batch_stats)


# ----------------------------------------------------------------------------- images

def image_rows(rows, normalize: str, n: int = 8) -> np.ndarray:
    """[1, R*H, nW, 3] image in [0, 1]: one row per batch-sharded array of images (e.g. view 1
    and view 2) showing its first n examples this process holds (on process 0: the first n of
    the global batch), without cross-host transfer. uint8 rows (aug.on_device: the host's
    crop/resize/flip before the colour ops) are shown as they are."""
    shown = []
    for images in rows:
        x = parallel.local_rows(images, n)
        x = x / 255.0 if x.dtype == np.uint8 else normalization.denormalize(x, normalize)
        shown.append(np.concatenate(list(x), axis=1))
    return np.clip(np.concatenate(shown, axis=0), 0.0, 1.0)[None].astype(np.float32)


# ----------------------------------------------------------------------------- loop

def flat_hparams(config) -> dict:
    """The config as TensorBoard hparams: {"optimizer.base_lr": 0.3, ...}; lists and None as
    text (hparams hold scalars and strings only)."""
    flat = {}

    def visit(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if hasattr(value, "items"):
                visit(name + ".", value)
            elif isinstance(value, (bool, int, float, str)):
                flat[name] = value
            else:
                flat[name] = str(value)

    visit("", config)
    return flat


def mean_metrics(history: list[dict]) -> dict:
    """The mean of each metric over the steps since the last summary (one host transfer)."""
    host = jax.device_get(history)
    return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def train_and_evaluate(config, workdir: str, stop_after_steps: int | None = None, *,
                       keep_alive: list | None = None) -> dict:
    """Pretrain with `config`, writing TensorBoard events and checkpoints under `workdir`.

    Resumes automatically from the newest intact checkpoint in `workdir`; re-running a finished
    run returns its stored result and changes nothing (see `workdir.py` for the lock, the
    history and the config check at resume). `stop_after_steps` ends this invocation (with a
    checkpoint) after that many steps, for time-limited job slots; the next invocation resumes.
    SIGTERM does the same at a step all processes agree on. Returns the final metrics
    (including kNN accuracy of the learned encoder and of the same encoder at initialisation);
    "stopped" is True when the run ended before total_steps.

    `keep_alive`: a list the caller owns; the run's input iterator is appended to it instead of
    being destroyed on return. Destroying a tf.data iterator waits for its autotuning thread,
    which sleeps up to 60 s between rounds (measured: a SIGTERM'd run spent 15-60 s in that
    destructor after a few minutes of training, longer than a preemption grace period; 0.01-
    0.03 s after a 20-step run). The command line holds the list until it ends with os._exit
    (preemption.exit_now), so it never waits; without a list the wait is at the return.
    """
    validate_config(config)
    check_splits(config)
    stop = preemption.StopSignal()  # from here on, SIGTERM stops at the first step boundary
    try:
        with workdir_lib.WorkdirLock(workdir) as lock:
            return _train_and_evaluate(config, workdir, stop_after_steps, stop,
                                       read_only=lock.read_only, keep_alive=keep_alive)
    finally:
        stop.restore()


def _train_and_evaluate(config, workdir: str, stop_after_steps: int | None,
                        stop: preemption.StopSignal, read_only: bool = False,
                        keep_alive: list | None = None) -> dict:
    mesh = parallel.make_mesh()
    parallel.check_batch_divisible(config.batch_size, mesh)
    method = get_method(config.method)

    train_source = sources.get_source(config.dataset.name, config.dataset.train_split,
                                      config.dataset.get("data_dir"))
    if train_source.num_examples < config.batch_size:
        raise UserError(f"the training split has {train_source.num_examples} examples, fewer "
                         f"than one batch ({config.batch_size}); lower --config.batch_size.")
    if method.needs_index and not train_source.random_access:
        raise UserError(f"method {config.method} needs each example's index in the training "
                        f"split (a per-example memory), which the streamed source "
                        f"{config.dataset.name}:{config.dataset.train_split} cannot give; use a "
                        f"random-access source (a folder, the embedded digits, or a TFDS dataset "
                        f"small enough to be read into memory).")
    ctx = make_context(config, train_source.num_examples, mesh)
    method.validate(config, ctx)
    num_classes = train_source.num_classes or 0
    total_steps, warmup_steps, lr_schedule = make_schedules(config, train_source.num_examples)
    manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
    config_changes = workdir_lib.check_resume(workdir, config, manager.latest_step())
    finished = workdir_lib.finished_result(workdir, manager.latest_step(), total_steps,
                                           config_changes, config.method)
    if finished is not None:
        return finished
    if read_only:
        raise UserError(f"--workdir {workdir} is not writable and holds no finished run of this "
                        f"config; pass a writable directory (copy this one to resume it).")

    network = method.build_network(config, num_classes)
    tx = make_optimizer(config, method, lr_schedule, ctx)
    init_rng = jax.random.PRNGKey(config.seed)
    # config.init_from is read when the run starts, not when it resumes (the checkpoint has it)
    backbone = (init_weights.load_initial_backbone(config) if manager.latest_step() is None
                else None)
    state = create_train_state(config, network, tx, method, mesh, init_rng, ctx, backbone)

    restored = checkpoint.restore_latest(manager, state)
    if restored is not None:
        state = restored
        logging.info("Resumed from checkpoint at step %d.", int(state.step))
    start_step = int(jax.device_get(state.step))
    if start_step > total_steps:
        raise UserError(f"{workdir} holds a checkpoint at step {start_step}, beyond this "
                        f"config's {total_steps} steps; pass --config.num_steps={start_step} or "
                        f"more, or use a new --workdir.")
    if restored is not None and workdir_lib.stored_event(workdir, "finished", start_step):
        logging.warning("Continuing the run finished at step %d to step %d.", start_step,
                        total_steps)
    workdir_lib.record_start(workdir, config, start_step=start_step, total_steps=total_steps,
                             changes=config_changes)
    guard = DivergenceGuard.start(config.guard.max_ratio, manager.directory,
                                  start_step if restored is not None else None,
                                  float(optax.global_norm(state.params)))

    is_chief = jax.process_index() == 0
    writer = reporting.create_writer(str(workdir), just_logging=not is_chief)
    if is_chief and start_step == 0:
        logging.info("Parameters:\n%s", reporting.parameter_overview(state.params))
        writer.write_hparams({**flat_hparams(config), "total_steps": total_steps,
                              "warmup_steps": warmup_steps, "num_devices": jax.device_count(),
                              "train_examples": train_source.num_examples})

    if config.dataset.get("on_device"):
        batches = device_dataset.batches(train_source, mesh)
    else:
        from simclr_jax.data import pipeline
        batches = pipeline.pretrain_batches(train_source, config.aug,
                                            global_batch_size=config.batch_size,
                                            image_size=config.dataset.image_size,
                                            seed=config.seed, start_step=start_step, mesh=mesh)
    step_fn = jit_train_step(mesh, method=method, network=network, config=config, tx=tx,
                             lr_schedule=lr_schedule, ctx=ctx)
    evaluator = make_knn_evaluator(config, mesh, method)
    hooks = reporting.progress_hooks(
        total_steps, writer, config.log_every_steps, profile_logdir=workdir if is_chief else None,
        profile_first_step=config.get("profile_first_step", 0),
        profile_num_steps=config.get("profile_num_steps", 5))
    report = hooks[0]
    throttle = parallel.DispatchThrottle()
    history: list[dict] = []
    summary: dict = {}
    last_log_time, last_log_step = time.time(), start_step
    paused = 0.0     # seconds spent in kNN evaluations and checkpoints since the last log
    saving = None    # the checkpoint save in flight (checkpoint.Saving)

    try:
        for step in range(start_step, total_steps):
            batch = next(batches)
            if (step == start_step == 0 and is_chief and config.get("log_images", True)
                    and "view1" in batch):      # dataset.on_device: views exist in the step only
                shown = [batch[v] for v in aug_presets.view_names(config.aug)  # rows of one width
                         if batch[v].shape == batch["view1"].shape]
                writer.write_images(0, {"augmented_view_pairs": image_rows(
                    shown, config.aug.view1.normalize)})
            state, metrics = step_fn(state, batch)
            history.append(throttle(metrics))
            for hook in hooks:
                hook(step + 1)
            done = step + 1
            at_end = done == total_steps
            if stop_after_steps is not None and done - start_step >= stop_after_steps:
                stop.request()
            stopping = stop.should_stop(done) and not at_end
            # Metrics are pulled to the host (a sync) only at log and checkpoint steps, and the
            # non-finite check runs before any checkpoint is written.
            if (done % config.log_every_steps == 0 or done % config.checkpoint_every_steps == 0
                    or at_end or stopping):
                summary = mean_metrics(history)
                history = []
                guard.check(summary, last_log_step, done)
                elapsed = time.time() - last_log_time - paused      # training steps only
                images = (done - last_log_step) * config.batch_size
                summary["images_per_sec_per_device"] = images / elapsed / jax.device_count()
                last_log_time, last_log_step, paused = time.time(), done, 0.0
                writer.write_scalars(done, summary)
            if evaluator and (done % config.eval.every_steps == 0 or at_end):
                t0 = time.time()
                with report.timed("eval"):
                    knn_metrics = score_knn(evaluator, method, config, state)
                    neighbours = evaluator.neighbours_image()
                paused += time.time() - t0
                if is_chief and neighbours is not None and config.get("log_images", True):
                    writer.write_images(done, {"knn_neighbours": neighbours})
                writer.write_scalars(done, knn_metrics)
                summary.update(knn_metrics)
                logging.info("step %d: %s", done, knn_metrics)
            if done % config.checkpoint_every_steps == 0 or at_end or stopping:
                t0 = time.time()
                with report.timed("checkpoint"):
                    saving = checkpoint.save(manager, state, saving)
                paused += time.time() - t0
                guard.saved(done)
            if stopping:
                break
    finally:
        if keep_alive is not None:      # not destroyed on return: see train_and_evaluate
            keep_alive.append(batches)
        checkpoint.wait_until_finished(manager, saving)

    final_step = int(jax.device_get(state.step))
    if final_step == total_steps and start_step == total_steps:
        # Resumed after the last save (a crash during the final evaluation): the training
        # metrics were recorded before it; the learned encoder is scored again if they lack it.
        summary = workdir_lib.stored_event(workdir, "trained", final_step) or {}
        if evaluator and "knn_top1" not in summary:
            summary.update(score_knn(evaluator, method, config, state))
    elif final_step == total_steps:
        workdir_lib.record_metrics(workdir, "trained", {**summary, "step": final_step})
    if final_step == total_steps and evaluator and config.eval.get("knn_at_init", True):
        if config.get("init_from") and backbone is None:   # resumed: read it for the baseline
            backbone = init_weights.load_initial_backbone(config)
        init_state = create_train_state(config, network, tx, method, mesh, init_rng, ctx,
                                        backbone)
        init_metrics = {f"{k}_init": v for k, v in score_knn(
            evaluator, method, config, init_state,
            bn_batches=0 if config.get("init_from") else config.eval.get("init_bn_batches", 20)
        ).items()}
        writer.write_scalars(final_step, init_metrics)
        summary.update(init_metrics)
    writer.flush()
    summary["step"] = final_step
    summary["total_steps"] = total_steps
    summary["stopped"] = final_step < total_steps
    if not summary["stopped"]:
        workdir_lib.record_metrics(workdir, "finished", summary)
    return summary
