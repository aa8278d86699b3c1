"""Per-device memory of InstDisc's train step with the ImageNet memory bank (1,281,167 x 128
float32 = 656 MB), sharded over the "data" axis against replicated.

    python benchmarks/instdisc_bank_memory.py            # 8 virtual CPU devices by default

Only the bank's size matters here: the step is lowered and compiled (nothing runs, nothing is
allocated) with a tiny backbone (ResNet-10 x1/8, 32 px) at the preset's batch 256 and K 4096,
and `compiled.memory_analysis()` of the per-device program is printed.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def mib(nbytes: int) -> float:
    return nbytes / 2**20


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--examples", type=int, default=1_281_167)
    parser.add_argument("--preset", default="imagenet_r50")
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp

    from simclr_jax import optim, parallel, train
    from simclr_jax.config_base import load_config_file
    from simclr_jax.methods import get_method

    c = load_config_file(os.path.join(ROOT, "configs", "instdisc.py"), args.preset)
    c.model.depth, c.model.width, c.model.stem = 10, 0.125, "cifar"
    c.dataset.image_size = 32
    mesh = parallel.make_mesh()
    method = get_method(c.method)
    n, B = args.examples, c.batch_size
    ctx = train.make_context(c, n, mesh)
    _, _, schedule = train.make_schedules(c, n)
    network = method.build_network(c, 1000)
    tx = train.make_optimizer(c, method, schedule, ctx)
    batch = {"view1": jax.ShapeDtypeStruct((B, 32, 32, 3), jnp.float32),
             "label": jax.ShapeDtypeStruct((B,), jnp.int32),
             "index": jax.ShapeDtypeStruct((B,), jnp.int32)}
    rows = []
    for name, hook in (("sharded (state_sharding hook)", method.state_sharding),
                       ("replicated", lambda *a: None)):
        method.state_sharding = hook          # this process only: compare the two layouts
        shardings = train.state_sharding(c, network, tx, method, ctx, mesh)
        abstract = jax.eval_shape(train._init_fn(c, network, tx, method, ctx,
                                                 jax.random.PRNGKey(0)))
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract, shardings)
        step = train.jit_train_step(mesh, method=method, network=network, config=c, tx=tx,
                                    lr_schedule=schedule, ctx=ctx)
        m = step.lower(abstract, batch).compile().memory_analysis()
        rows.append((name, m))
        del method.state_sharding
    bank = abstract.method_state["bank"]
    print(f"InstDisc {args.preset}: bank {bank.shape} float32 "
          f"({bank.size * 4 / 2**20:.0f} MiB), batch {B}, K {c.instdisc.num_negatives}, "
          f"{len(jax.devices())} {jax.devices()[0].platform} devices; per device, MiB:")
    print("| bank layout | arguments | outputs | temporaries | aliased | peak estimate |")
    print("|---|---|---|---|---|---|")
    for name, m in rows:
        args_, out, tmp = (m.argument_size_in_bytes, m.output_size_in_bytes,
                           m.temp_size_in_bytes)
        alias = m.alias_size_in_bytes
        print(f"| {name} | {mib(args_):.1f} | {mib(out):.1f} | {mib(tmp):.1f} | "
              f"{mib(alias):.1f} | {mib(args_ + out - alias + tmp):.1f} |")


if __name__ == "__main__":
    main()
