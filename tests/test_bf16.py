"""bf16 mixed precision (model.dtype="bfloat16"): convolutions in bf16; parameters, BN statistics,
the heads, the loss and its softmax in float32. Loss and one update within a stated tolerance of
float32 on the same parameters and batch; a short run still learns (with aug.on_device too)."""
import jax
import jax.numpy as jnp
import numpy as np
from tiny_configs import load_config, random_batch, tiny

from simclr_jax import optim, parallel, train

# bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4%); errors average out over a loss, so:
LOSS_RTOL = 1e-2          # |loss_bf16 - loss_f32| / loss_f32
UPDATE_RTOL = 0.2         # ||dW_bf16 - dW_f32|| / ||dW_f32||, all parameters (measured 0.10)


def setup(dtype):
    c = tiny("quickstart.py", batch_size=16, image_size=16)
    c.unlock()
    c.model.dtype = dtype
    c.lock()
    mesh = parallel.make_mesh()
    schedule = optim.make_lr_schedule("constant", peak_lr=0.5, total_steps=10, warmup_steps=0,
                                      boundaries=(), steps_per_epoch=10)
    method, network, _, state, step, _ = train.build_step(c, mesh, schedule, 10)
    batch = parallel.to_global(mesh, random_batch(16, 16))
    return c, method, network, state, step, batch


def conv_dtypes(jaxpr) -> list:
    """Operand dtypes of every convolution in a (closed) jaxpr, sub-jaxprs included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            out.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else []:
            out += conv_dtypes(sub)
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                out += conv_dtypes(inner)
            elif hasattr(p, "eqns"):
                out += conv_dtypes(p)
    return out


def test_bf16_matches_float32_within_tolerance_and_keeps_float32_where_it_matters():
    runs = {dtype: setup(dtype) for dtype in ("float32", "bfloat16")}
    (c32, m32, n32, s32, step32, batch), (c16, m16, n16, s16, step16, _) = (
        runs["float32"], runs["bfloat16"])
    # Same parameters at initialisation (the compute dtype does not change the init).
    for a, b in zip(jax.tree.leaves(s32.params), jax.tree.leaves(s16.params)):
        np.testing.assert_array_equal(a, b)

    # The backbone's convolutions compute in bf16 (inputs and kernels), and only there.
    rng = jax.random.PRNGKey(1)
    loss_of = lambda m, n, c, s: (lambda p: m.compute_loss(n, c, p, s, batch, rng, None)[0])
    convs16 = conv_dtypes(jax.make_jaxpr(loss_of(m16, n16, c16, s16))(s16.params).jaxpr)
    convs32 = conv_dtypes(jax.make_jaxpr(loss_of(m32, n32, c32, s32))(s32.params).jaxpr)
    assert convs16 and all(d == ("bfloat16", "bfloat16") for d in convs16), convs16
    assert convs32 and all(d == ("float32", "float32") for d in convs32)

    old32, old16 = (jax.tree.map(np.array, s.params) for s in (s32, s16))  # copies
    new32, met32 = step32(s32, batch)
    new16, met16 = step16(s16, batch)
    # The state is donated: its input buffers are consumed, one copy of the state exists.
    kept = [jax.tree_util.keystr(k) for k, x in jax.tree_util.tree_leaves_with_path(
        (s16.params, s16.opt_state)) if not x.is_deleted()]
    assert not kept, kept
    # Loss (and its softmax) in float32, within LOSS_RTOL of the float32 model.
    assert met16["loss"].dtype == jnp.float32
    assert abs(float(met16["loss"]) - float(met32["loss"])) <= LOSS_RTOL * float(met32["loss"])
    # Parameters, optimizer state and BN statistics stay float32.
    for tree in (new16.params, new16.batch_stats, new16.opt_state):
        assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(tree))
    # One update within UPDATE_RTOL of float32's (same start, same batch).
    d32 = jax.tree.map(lambda n, o: np.asarray(n) - o, new32.params, old32)
    d16 = jax.tree.map(lambda n, o: np.asarray(n) - o, new16.params, old16)
    diff = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in
                       zip(jax.tree.leaves(d16), jax.tree.leaves(d32))))
    norm = np.sqrt(sum(np.sum(a ** 2) for a in jax.tree.leaves(d32)))
    print(f"loss f32 {float(met32['loss']):.5f} bf16 {float(met16['loss']):.5f}; "
          f"update rel. diff {diff / norm:.4f}")
    assert norm > 0 and diff <= UPDATE_RTOL * norm, (diff, norm)
    # BN running statistics after the step: within the same tolerance.
    for a, b in zip(jax.tree.leaves(new16.batch_stats), jax.tree.leaves(new32.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05)


def test_bf16_with_on_device_augmentation_still_learns(tmp_path):
    """The quickstart (digits, SimCLR), shortened, in bf16 with augmentation on the device:
    the learned encoder beats its random initialisation on kNN."""
    config = load_config("quickstart.py")
    config.model.dtype = "bfloat16"
    config.aug.on_device = True
    config.model.depth = 10                 # ResNet-10 (one block per stage): cheap to compile
    config.dataset.image_size = 16
    config.model.width = 0.125
    config.num_steps = 20
    config.batch_size = 32
    config.warmup_epochs = 1.0
    config.eval.every_steps = 1000
    config.eval.knn_at_init = True
    config.log_images = True
    config.checkpoint_every_steps = 1000
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 20
    assert summary["knn_top1"] > summary["knn_top1_init"] + 0.02, summary
