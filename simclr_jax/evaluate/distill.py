"""Distillation (SimCLRv2 self-training): a fine-tuned teacher labels unlabelled images.

    python -m simclr_jax.main --config configs/distill.py:cifar10 \
        --config.teacher_from=runs/ft10pct --workdir runs/distilled

The student (config.model: the same or a smaller backbone, plus a linear head) trains from
scratch (or from the backbone in config.init_from: init_weights.py) on the train split, labels
not needed, minimising
    alpha * tau^2 * CE(softmax(teacher / tau), student / tau) + (1 - alpha) * CE(labels, student)
(the tau^2 of the SimCLRv2 distillation colab; SimCLRv2's notation: alpha = 1 is pure
distillation, the paper's default; the labelled term uses the labels present in the batch,
unlabelled examples (-1) are masked out of it).
The teacher runs in inference mode from `state.frozen["teacher"]` and never changes. Reported:
the student's top-1/top-5, its agreement with the teacher (fraction of evaluation images with
the same argmax) and the teacher's own top-1, before ("_init") and after training.
"""
from __future__ import annotations


from absl import logging
import jax
import jax.numpy as jnp

from simclr_jax import init_weights, losses
from simclr_jax.data import sources
from simclr_jax.evaluate import classifier as clf
from simclr_jax.evaluate import supervised
from simclr_jax.errors import UserError

RESULTS = "distill.json"


def objective(student_logits, teacher_logits, labels, *, temperature: float, alpha: float):
    """(loss, metrics) for logits [N, C] and labels [N] (-1 = unlabelled); alpha is static."""
    distill = losses.distillation_loss(student_logits, teacher_logits, temperature)
    agree = jnp.argmax(student_logits, -1) == jnp.argmax(teacher_logits, -1)      # [N]
    metrics = {"distill_loss": distill, "train_agreement": jnp.mean(agree.astype(jnp.float32))}
    if alpha >= 1.0:
        return distill, metrics
    mask = labels >= 0                                                             # [N]
    ce = losses.softmax_cross_entropy(student_logits, jnp.maximum(labels, 0), mask)
    metrics["label_loss"] = ce
    return alpha * distill + (1.0 - alpha) * ce, metrics


def distill_task(student: clf.Classifier, teacher: clf.Classifier, *, temperature: float,
                 alpha: float) -> supervised.Task:
    def teacher_logits(frozen, images):
        return jax.lax.stop_gradient(teacher.apply(frozen["teacher"], images, train=False))

    def loss(params, batch_stats, frozen, batch, rng):
        t = teacher_logits(frozen, batch["image"])                                 # [B, C]
        s, mutated = student.apply({"params": params, "batch_stats": batch_stats},
                                   batch["image"], train=True, mutable=["batch_stats"])
        value, metrics = objective(s, t, batch["label"], temperature=temperature, alpha=alpha)
        return value, (mutated["batch_stats"], metrics)

    def predict(params, batch_stats, frozen, images):
        s = student.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
        return {"logits": s, "teacher_logits": teacher_logits(frozen, images)}

    return supervised.Task(loss=loss, predict=predict)


def init_student(module: clf.Classifier, rng, image_size: int, group: int | None) -> dict:
    """Fresh student variables (one small init program)."""
    dummy = jnp.zeros((2 * (group or 1), image_size, image_size, 3), jnp.float32)
    return jax.jit(lambda r: module.init(r, dummy, train=False))(rng)


def run(config, workdir: str) -> dict:
    """Distil the classifier in config.teacher_from into config.model; writes distill.json."""
    if not config.teacher_from:
        raise UserError("set --config.teacher_from=<workdir of a finetune (or linear_eval) run>.")
    d = config.distill
    if not d.temperature > 0:
        raise UserError(f"distill.temperature must be > 0, got {d.temperature}.")
    if not 0.0 <= d.alpha <= 1.0:
        raise UserError(f"distill.alpha must be in [0, 1] (1 = distillation only), got {d.alpha}.")
    teacher, teacher_vars, tmeta = clf.load(config.teacher_from, config.get("teacher_step"))
    pool = tmeta.get("pretrain_dataset") or tmeta["dataset"]   # the unlabelled pool
    ds = supervised.resolve_dataset(config.dataset, {
        "name": pool["name"], "data_dir": pool.get("data_dir"),
        "train_split": pool.get("train_split"), "eval_split": tmeta["dataset"]["eval_split"],
        "image_size": tmeta["image_size"]})
    mesh = supervised.make_protocol_mesh(config)
    train_source = sources.get_source(ds.name, ds.train_split, ds.data_dir)
    eval_source = sources.get_source(ds.name, ds.eval_split, ds.data_dir)
    if d.alpha < 1.0:
        supervised.require_labels(train_source, "distillation with alpha < 1")
    normalize = tmeta["normalize"]

    meta = clf.describe(config.model, num_classes=tmeta["num_classes"],
                        image_size=ds.image_size, normalize=normalize,
                        zero_init=config.classifier.zero_init,
                        extra={"protocol": "distill", "teacher_from": config.teacher_from,
                               "dataset": ds.to_dict(), "pretrain_dataset": dict(pool)})
    student = clf.build(meta)
    rng = jax.random.PRNGKey(config.seed)
    variables = init_student(student, rng, ds.image_size, config.model.get("bn_group_size"))
    backbone = init_weights.load_initial_backbone(config)     # None: from scratch
    if backbone is not None:
        variables = init_weights.graft_backbone(jax.device_get(variables), backbone)
    total_steps, schedule, tx = supervised.protocol_optimizer(config, train_source.num_examples)
    state = supervised.create_state(variables["params"], variables.get("batch_stats", {}),
                                    {"teacher": teacher_vars}, tx, jax.random.fold_in(rng, 1),
                                    mesh)

    task = distill_task(student, teacher, temperature=d.temperature, alpha=d.alpha)
    logging.info("Distilling %s into a %s student on %s:%s for %d steps.", config.teacher_from,
                 config.model.name, ds.name, ds.train_split, total_steps)
    state, results = supervised.fit_protocol(
        config, state, task, tx=tx, schedule=schedule, mesh=mesh, train_source=train_source,
        eval_source=eval_source, image_size=ds.image_size, normalize=normalize,
        total_steps=total_steps, workdir=workdir, meta=meta, eval_at_start=True)
    results.update({"protocol": "distill", "teacher_from": config.teacher_from,
                    "dataset": ds.name, "train_split": ds.train_split,
                    "eval_split": ds.eval_split, "eval_split_size": eval_source.num_examples,
                    "temperature": d.temperature, "alpha": d.alpha})
    supervised.write_json(workdir, RESULTS, results)
    return results
