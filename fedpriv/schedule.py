"""Who trains in a round, and on which minibatches, as pure functions of keys."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_clients(key: jax.Array, num_clients: int, cohort_size: int) -> jax.Array:
  """`cohort_size` distinct client ids, uniformly without replacement, sorted."""
  if not 1 <= cohort_size <= num_clients:
    raise ValueError(f"cohort_size must be in [1, {num_clients}], got {cohort_size}")
  ids = jax.random.choice(key, num_clients, (cohort_size,), replace=False)
  return jnp.sort(ids).astype(jnp.int32)


def poisson_clients(key: jax.Array, num_clients: int, rate: float, capacity: int):
  """Poisson sampling: each client independently with probability `rate`, padded.

  Each client draws u ~ U[0, 1) and is sampled when u < rate. The `capacity` smallest
  draws are kept, so when more than `capacity` clients are sampled a uniformly random
  `capacity` of them stay (the truncation the accountant charges to delta).

  Returns:
    `(ids [capacity] int32, count)`: the sampled ids sorted, then zeros; `count` (int32
    scalar) how many of the leading entries are real.
  """
  if not 1 <= capacity <= num_clients:
    raise ValueError(f"capacity must be in [1, {num_clients}], got {capacity}")
  u = jax.random.uniform(key, (num_clients,))
  neg, idx = jax.lax.top_k(-u, capacity)
  chosen = -neg < rate
  ids = jnp.sort(jnp.where(chosen, idx, num_clients))
  return jnp.where(ids < num_clients, ids, 0).astype(jnp.int32), jnp.sum(chosen, dtype=jnp.int32)


def steps_per_epoch(max_examples: int, batch_size: int) -> int:
  return -(-max_examples // batch_size)


def client_batches(key: jax.Array, mask: jax.Array, epochs: int, batch_size: int):
  """A client's minibatch schedule for `epochs` passes over its real examples.

  Each epoch is a fresh random order of the client's real examples cut into batches of
  `batch_size` (the last one partial). Clients are padded to a common `max_examples`, so
  the schedule has a fixed `epochs * ceil(max_examples / batch_size)` steps; positions
  past the client's own examples are marked invalid (and steps with no valid example
  leave the model untouched).

  Args:
    key: the client's shuffle key.
    mask: `[max_examples]` bool, the client's real examples.
    epochs: local epochs.
    batch_size: examples per step.

  Returns:
    `(idx, valid)`, both `[steps, batch_size]`: example indices into the client's
    arrays and whether each position holds a real example.
  """
  n_max = mask.shape[0]
  spe = steps_per_epoch(n_max, batch_size)
  count = mask.sum()
  pos = jnp.arange(spe * batch_size)
  valid = (pos < count).reshape(spe, batch_size)

  def one_epoch(e):
    u = jax.random.uniform(jax.random.fold_in(key, e), (n_max,))
    order = jnp.argsort(jnp.where(mask, u, u + 2.0))  # real examples first, shuffled
    return order[jnp.minimum(pos, n_max - 1)].reshape(spe, batch_size).astype(jnp.int32)

  idx = jax.vmap(one_epoch)(jnp.arange(epochs))
  return idx.reshape(epochs * spe, batch_size), jnp.tile(valid, (epochs, 1))
