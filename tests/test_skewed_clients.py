"""A round costs the steps its clients really take: steps without examples are skipped
(one client at a time), not computed and discarded, and the result is unchanged."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import TinyMLP, tiny_population
from fedpriv.local import local_train
from fedpriv.models.registry import Task
from fedpriv.schedule import client_batches


def _counting_task(calls):
  class Counting(nn.Module):
    @nn.compact
    def __call__(self, x):
      jax.debug.callback(lambda: calls.append(1))
      return TinyMLP()(x)
  return Task("counting", "classification", Counting(), (4,))


def test_steps_without_examples_are_not_computed_and_change_nothing():
  calls = []
  task = _counting_task(calls)
  pop = tiny_population([6], max_examples=20)
  x, y = jnp.asarray(pop.x[0]), jnp.asarray(pop.y[0])
  key = jax.random.key(0)
  idx, valid = client_batches(key, jnp.asarray(pop.mask[0]), 2, 2)  # 2 x 10 steps, 2 x 3 real
  params = task.init(jax.random.key(1))
  opt = optax.adam(0.05)
  for unroll in (1, 3, 5):
    calls.clear()
    trained, stats = jax.jit(lambda p, i, v, u=unroll: local_train(
        task, opt, p, x, y, i, v, unroll=u))(params, idx, valid)
    jax.block_until_ready(trained)
    jax.effects_barrier()
    # Steps run in blocks of `unroll`; only blocks that hold a real step are computed:
    # the 6 real steps at unroll 1, 3 blocks of 3 (20 steps padded to 21) at unroll 3,
    # 2 blocks of 5 at unroll 5 (not all 20 steps).
    assert len(calls) == {1: 6, 3: 9, 5: 10}[unroll], (unroll, len(calls))
    # The same client trained on its real steps alone (no padding steps at all).
    real = np.asarray(valid.any(-1))
    ref, ref_stats = local_train(task, opt, params, x, y, idx[real], valid[real])
    chex.assert_trees_all_close(trained, ref, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(stats, ref_stats, rtol=1e-6)
    assert float(stats[2]) == 12.0  # two epochs of six examples


def test_vmapped_clients_of_different_sizes_each_train_their_own_steps():
  from conftest import tiny_task  # pylint: disable=import-outside-toplevel
  task = tiny_task()
  pop = tiny_population([2, 9, 0], max_examples=12, seed=3)
  params = task.init(jax.random.key(0))
  opt = optax.sgd(0.1)
  keys = jax.random.split(jax.random.key(5), 3)
  sched = jax.vmap(lambda k, m: client_batches(k, m, 1, 4))(keys, jnp.asarray(pop.mask))
  one = lambda x, y, i, v: local_train(task, opt, params, x, y, i, v)
  together, stats = jax.vmap(one)(jnp.asarray(pop.x), jnp.asarray(pop.y), *sched)
  for c in range(3):
    alone, _ = one(jnp.asarray(pop.x[c]), jnp.asarray(pop.y[c]), sched[0][c], sched[1][c])
    chex.assert_trees_all_close(jax.tree.map(lambda a, c=c: a[c], together), alone,
                                rtol=1e-6, atol=1e-7)
  # The client with no examples leaves the model exactly as it was.
  chex.assert_trees_all_equal(jax.tree.map(lambda a: a[2], together), params)
  np.testing.assert_array_equal(np.asarray(stats[2]), [2.0, 9.0, 0.0])


def test_a_round_trains_only_the_steps_its_sampled_clients_hold():
  from fedpriv.fedavg import FedAvg  # pylint: disable=import-outside-toplevel
  calls = []
  task = _counting_task(calls)
  pop = tiny_population([4, 4, 40, 8, 12, 3], seed=1)
  sizes = np.asarray(pop.mask).sum(1)
  base = jax.random.key(7)
  for sampling, capacity in (("fixed", 0), ("poisson", 6)):
    algo = FedAvg(task=task, client_optimizer=optax.sgd(0.1),
                  server_optimizer=optax.sgd(1.0), clients_per_round=3, local_epochs=1,
                  batch_size=4, client_sampling=sampling, capacity=capacity)
    state = algo.init(task.init(jax.random.key(0)), jax.random.key(1))
    cohort = algo.sample_cohort(base, 1, len(sizes))
    real = np.asarray(cohort.client_ids)[np.asarray(cohort.valid)]
    step = jax.jit(algo.apply)
    calls.clear()
    jax.block_until_ready(step(state, pop, cohort))
    jax.effects_barrier()
    # One forward pass per real step of a sampled client (ceil(n / batch)); the padded
    # steps of small clients and the slots a Poisson draw left empty cost none
    # (without the skip: capacity x 10 steps).
    assert len(calls) == int(np.sum(-(-sizes[real] // 4))), (sampling, len(calls), real)


def test_no_step_is_added_when_the_steps_do_not_fill_the_blocks():
  # One-step clients (the 6,000-clients-of-10 setting) and a remainder block: as many
  # forward passes as steps, at any unroll.
  calls = []
  task = _counting_task(calls)
  params = task.init(jax.random.key(1))
  for n, batch, steps in ((10, 10, 1), (28, 4, 7)):
    pop = tiny_population([n], seed=2)
    x, y = jnp.asarray(pop.x[0]), jnp.asarray(pop.y[0])
    idx, valid = client_batches(jax.random.key(3), jnp.asarray(pop.mask[0]), 1, batch)
    assert idx.shape[0] == steps
    for unroll in (1, 5):
      calls.clear()
      jax.block_until_ready(jax.jit(lambda p, u=unroll, x=x, y=y, i=idx, v=valid: local_train(
          task, optax.sgd(0.1), p, x, y, i, v, unroll=u))(params))
      jax.effects_barrier()
      assert len(calls) == steps, (n, unroll, len(calls))
