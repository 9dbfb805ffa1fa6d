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
                idx: jax.Array, valid: jax.Array, *, unroll: int = 1, factors=None):
  """Trains `params` on one client's data; written for one client, `vmap` it for many.

  Args:
    task: the model and its loss.
    optimizer: the client optimizer (a fresh state is made for every client).
    params: the model the client starts from.
    x, y: the client's `[max_examples, ...]` arrays.
    idx, valid: `[steps, batch]` minibatch schedule (see `schedule.client_batches`).
    unroll: `lax.scan` unroll factor (a few steps per loop iteration help XLA:CPU).
    factors: optional pytree broadcastable to `params`: the model computes with
      `params * factors` and training differentiates through that product, so the
      optimizer steps `params` themselves (FedQSN: a unit's factor is 0 or its mask
      scale, the same function as masking and scaling its activation).

  Returns:
    `(new_params, (loss_sum, correct_sum, count))`, the statistics summed over all
    local steps (training loss and accuracy of the batches as they were trained).
  """

  def loss(p, *batch):
    return task.mean_loss(with_factors(p, factors), *batch)

  def step(carry, batch):
    p, s = carry
    bi, bv = batch
    grads, stats = jax.grad(loss, has_aux=True)(p, x[bi], y[bi], bv)
    updates, s_new = optimizer.update(grads, s, p)
    p_new = optax.apply_updates(p, updates)
    # A step whose batch holds no real example (a client smaller than the largest one)
    # must leave parameters and optimizer state exactly as they were.
    active = bv.any()
    keep = lambda new, old: jnp.where(active, new, old)
    return (jax.tree.map(keep, p_new, p), jax.tree.map(keep, s_new, s)), stats

  (params, _), stats = lax.scan(step, (params, optimizer.init(params)), (idx, valid),
                                unroll=unroll)
  return params, jax.tree.map(lambda s: s.sum(0), stats)
