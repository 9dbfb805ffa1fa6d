"""Client local training: a `lax.scan` of optax steps over the client's minibatches."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from fedpriv.models.registry import Task


def with_factors(params, factors):
  """`params * factors` leaf by leaf (`factors` broadcast; None: `params` itself)."""
  if factors is None:
    return params
  return jax.tree.map(lambda p, f: p * jnp.asarray(f, p.dtype), params, factors)


def local_train(task: Task, optimizer: optax.GradientTransformation, params, x, y,
                idx: jax.Array, valid: jax.Array, *, unroll: int = 1, factors=None,
                skip_empty: bool = True):
  """Trains `params` on one client's data; written for one client, `vmap` it for many.

  Args:
    task: the model and its loss.
    optimizer: the client optimizer (a fresh state is made for every client).
    params: the model the client starts from.
    x, y: the client's `[max_examples, ...]` arrays.
    idx, valid: `[steps, batch]` minibatch schedule (see `schedule.client_batches`).
    unroll: steps per loop iteration (a few help XLA:CPU), also the blocks in which
      steps without examples are skipped.
    factors: optional pytree broadcastable to `params`: the model computes with
      `params * factors` and training differentiates through that product, so the
      optimizer steps `params` themselves (FedQSN: a unit's factor is 0 or its mask
      scale, the same function as masking and scaling its activation).
    skip_empty: skip blocks of steps that hold no real example with `lax.cond`. Pass
      False when clients are vmapped: under `vmap` the `cond` computes both branches
      anyway (a select), and it would batch the shared starting weights (see below).

  Returns:
    `(new_params, (loss_sum, correct_sum, count))`, the statistics summed over all
    local steps (training loss and accuracy of the batches as they were trained).
  """

  def loss(p, *batch):
    return task.mean_loss(with_factors(p, factors), *batch)

  def step(carry, bi, bv):
    p, s = carry
    grads, stats = jax.grad(loss, has_aux=True)(p, x[bi], y[bi], bv)
    updates, s_new = optimizer.update(grads, s, p)
    p_new = optax.apply_updates(p, updates)
    # A step whose batch holds no real example (a client smaller than the largest one,
    # or a cohort slot that holds no client) leaves parameters and optimizer state
    # exactly as they were.
    active = bv.any()
    keep = lambda new, old: jnp.where(active, new, old)
    return (jax.tree.map(keep, p_new, p), jax.tree.map(keep, s_new, s)), stats

  def block(carry, bis, bvs):
    stats = []
    for k in range(bis.shape[0]):  # `unroll` steps, unrolled
      carry, st = step(carry, bis[k], bvs[k])
      stats.append(st)
    return carry, jax.tree.map(lambda *a: sum(a[1:], a[0]), *stats)

  # The steps run in blocks of `unroll` (and one shorter block for the remainder); a
  # block without a real example is skipped by `cond`. For one client (no vmap) that
  # skips its gradients, so a round costs the steps its clients really take, not the
  # largest client's (a client's real steps lead each epoch: at most unroll - 1 empty
  # steps per epoch are computed). Under `vmap` the `cond` becomes a select of both
  # branches: every step is computed, as without blocks.
  carry = (params, optimizer.init(params))
  no_stats = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                          jax.eval_shape(step, carry, idx[0], valid[0])[1])

  def guarded(c, bis, bvs):
    if not skip_empty:
      return block(c, bis, bvs)
    return lax.cond(bvs.any(), block, lambda c_, *_: (c_, no_stats), c, bis, bvs)

  unroll = max(1, min(int(unroll), idx.shape[0]))
  full, rem = divmod(idx.shape[0], unroll)
  blocked = lambda a: a[:full * unroll].reshape((full, unroll) + a.shape[1:])
  blocks = [(idx[full * unroll:], valid[full * unroll:])] if rem else []
  # The first block runs outside the loop. Every client of a cohort starts from the
  # model it received, which for plain FedAvg and update privacy is the one global
  # model: under `vmap` the first step then sees unbatched weights, so its forward pass
  # and input gradients are one large batch over the chunk's clients instead of a
  # per-client (grouped) computation; only its weight gradients are per client. The
  # loop's carry is batched from there on (`skip_empty=False` keeps the weights
  # unbatched: a `cond` with a batched predicate batches all its operands). Without
  # `vmap` this changes nothing but where the block sits (block boundaries, and so the
  # skipping, are as before).
  totals = []
  if full:
    carry, stats = guarded(carry, idx[:unroll], valid[:unroll])
    totals.append(stats)
  if full > 1:
    carry, stats = lax.scan(lambda c, blk: guarded(c, *blk), carry,
                            (blocked(idx)[1:], blocked(valid)[1:]))
    totals.append(jax.tree.map(lambda a: a.sum(0), stats))
  for bis, bvs in blocks:
    carry, stats = guarded(carry, bis, bvs)
    totals.append(stats)
  params = carry[0]
  return params, jax.tree.map(lambda *a: sum(a[1:], a[0]), *totals)
