"""One client's local training with and without the skip of steps that hold no example.

    python -m launch.tools.bench_local_skip

`local_train` (blocks of `unroll` steps, a block without a real example skipped by
`lax.cond`) against the loop it replaced (every step computed, its result discarded
with `jnp.where`), McMahan's CNN, 600 real examples in steps of batch 20, padded to 600
(every step real) and to 2,360 (a Dirichlet(0.1) population's largest client): the
median of 6 calls of each, alternated in one process.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from fedpriv.local import local_train
from fedpriv.models import registry
from fedpriv.schedule import client_batches


def every_step(task, optimizer, params, x, y, idx, valid, unroll=1):
  """The previous loop: every step computed, kept only where its batch is real."""
  def step(carry, batch):
    p, s = carry
    bi, bv = batch
    grads, stats = jax.grad(task.mean_loss, has_aux=True)(p, x[bi], y[bi], bv)
    updates, s_new = optimizer.update(grads, s, p)
    p_new = optax.apply_updates(p, updates)
    keep = lambda new, old: jnp.where(bv.any(), new, old)
    return (jax.tree.map(keep, p_new, p), jax.tree.map(keep, s_new, s)), stats
  (params, _), stats = lax.scan(step, (params, optimizer.init(params)), (idx, valid),
                                unroll=unroll)
  return params, jax.tree.map(lambda s: s.sum(0), stats)


def main():
  task = registry.make_task("cnn", "classification", 10, (28, 28, 1), conv_impl="xla")
  params = task.init(jax.random.key(0))
  opt = optax.sgd(0.2)
  for n_max, n_real in ((600, 600), (2360, 600)):
    x = jax.random.normal(jax.random.key(1), (n_max, 28, 28, 1))
    y = jnp.zeros((n_max,), jnp.int32)
    idx, valid = client_batches(jax.random.key(2), jnp.arange(n_max) < n_real, 1, 20)
    fns = {"every step": jax.jit(lambda p, x=x, y=y, i=idx, v=valid: every_step(
               task, opt, p, x, y, i, v, 5)),
           "skip": jax.jit(lambda p, x=x, y=y, i=idx, v=valid: local_train(
               task, opt, p, x, y, i, v, unroll=5))}
    for f in fns.values():
      jax.block_until_ready(f(params))
    times = {k: [] for k in fns}
    for _ in range(6):
      for k, f in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(f(params))
        times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{n_real} real examples padded to {n_max}: every step {med['every step']:.3f} s, "
          f"skip {med['skip']:.3f} s, ratio {med['skip'] / med['every step']:.3f}", flush=True)


if __name__ == "__main__":
  main()
