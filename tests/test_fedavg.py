"""FedAvg round: equals a hand-written sequential computation, weights by example
counts, is deterministic by seed, chunk-size invariant, and compiles once."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv import links
from fedpriv.fedavg import FedAvg
from fedpriv.schedule import client_batches

LR = 0.1


def make_algo(cohort, chunk=1, epochs=1, batch=4, server=None, **kw):
  return FedAvg(task=tiny_task(), client_optimizer=optax.sgd(LR),
                server_optimizer=server or optax.sgd(1.0), clients_per_round=cohort,
                local_epochs=epochs, batch_size=batch, chunk_size=chunk, **kw)


def sequential_fedavg(task, params, pop, client_ids, schedules):
  """The same round written plainly: a Python loop over clients and steps."""
  deltas, weights = [], []
  for cid, (idx, valid) in zip(client_ids, schedules):
    p = params
    for s in range(idx.shape[0]):
      if not np.asarray(valid[s]).any():
        continue
      bi = np.asarray(idx[s])
      g = jax.grad(lambda q: task.mean_loss(q, pop.x[cid][bi], pop.y[cid][bi],
                                            np.asarray(valid[s]))[0])(p)
      p = jax.tree.map(lambda a, b: a - LR * b, p, g)
    deltas.append(jax.tree.map(jnp.subtract, p, params))
    weights.append(float(pop.mask[cid].sum()))
  total = sum(weights)
  mean = jax.tree.map(lambda *d: sum(w * x for w, x in zip(weights, d)) / total, *deltas)
  return jax.tree.map(jnp.add, params, mean)


def test_two_clients_equal_sequential_computation():
  pop = tiny_population([10, 6, 8], seed=1)
  algo = make_algo(cohort=2, chunk=2)
  params = algo.task.init(jax.random.key(0))
  base = keylib.base_key(3)
  cohort = algo.sample_cohort(base, 1, pop.num_clients)
  state, _ = jax.jit(algo.apply)(algo.init(params), jax.tree.map(jnp.asarray, pop), cohort)
  ids = [int(c) for c in cohort.client_ids]
  schedules = [client_batches(keylib.stage_key(k, keylib.SHUFFLE), pop.mask[c], 1, 4)
               for c, k in zip(ids, cohort.keys)]
  expected = sequential_fedavg(algo.task, params, pop, ids, schedules)
  chex.assert_trees_all_close(state.params, expected, atol=1e-5, rtol=1e-5)


def test_weights_are_example_counts():
  # One client with 12 examples, one with 3: the update is their 12:3 weighted mean.
  pop = tiny_population([12, 3], seed=2)
  algo = make_algo(cohort=2, chunk=1, batch=3)
  params = algo.task.init(jax.random.key(1))
  rkey = keylib.round_key(keylib.base_key(0), 1)
  steps = 4
  idx = jnp.stack([jnp.arange(12).reshape(steps, 3), jnp.zeros((steps, 3), jnp.int32)])
  valid = jnp.stack([jnp.ones((steps, 3), bool),
                     jnp.array([[True] * 3] + [[False] * 3] * 3)])
  cohort = algo.pad_cohort(jnp.array([0, 1]), rkey, batches=(idx, valid))
  state, metrics = algo.apply(algo.init(params), pop, cohort)
  np.testing.assert_allclose(metrics["client_weight"], [12.0, 3.0])
  expected = sequential_fedavg(algo.task, params, pop, [0, 1],
                               [(idx[0], valid[0]), (idx[1], valid[1])])
  chex.assert_trees_all_close(state.params, expected, atol=1e-5, rtol=1e-5)
  # And it is not the unweighted mean.
  p1 = sequential_fedavg(algo.task, params, pop, [0], [(idx[0], valid[0])])
  p2 = sequential_fedavg(algo.task, params, pop, [1], [(idx[1], valid[1])])
  unweighted = jax.tree.map(lambda a, b: (a + b) / 2, p1, p2)
  diff = max(float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(unweighted), jax.tree.leaves(state.params)))
  assert diff > 1e-4


def test_chunk_size_does_not_change_the_round():
  pop = jax.tree.map(jnp.asarray, tiny_population([9, 5, 7, 8, 6, 4], seed=3))
  base = keylib.base_key(5)
  results = []
  for chunk in (1, 2, 4):
    algo = make_algo(cohort=4, chunk=chunk, epochs=2)
    state = algo.init(algo.task.init(jax.random.key(2)))
    state, m = jax.jit(algo.run_round)(state, pop, base)
    results.append((state.params, m["train_loss"]))
  for params, loss in results[1:]:
    chex.assert_trees_all_close(params, results[0][0], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(loss, results[0][1], rtol=1e-6)


def test_padding_clients_contribute_nothing():
  # A cohort of 3 in chunks of 2 is padded with one invalid client.
  pop = jax.tree.map(jnp.asarray, tiny_population([6, 6, 6, 6], seed=4))
  algo = make_algo(cohort=3, chunk=2)
  assert algo.padded_cohort == 4
  params = algo.task.init(jax.random.key(0))
  cohort = algo.sample_cohort(keylib.base_key(0), 1, 4)
  assert not bool(cohort.valid[3])
  state, m = algo.apply(algo.init(params), pop, cohort)
  assert float(m["client_weight"][3]) == 0.0
  ids = [int(c) for c in cohort.client_ids[:3]]
  schedules = [client_batches(keylib.stage_key(k, keylib.SHUFFLE), pop.mask[c], 1, 4)
               for c, k in zip(ids, cohort.keys[:3])]
  expected = sequential_fedavg(algo.task, params, pop, ids, schedules)
  chex.assert_trees_all_close(state.params, expected, atol=1e-5, rtol=1e-5)


def test_same_seed_same_run_other_seed_other_run():
  pop = jax.tree.map(jnp.asarray, tiny_population([8] * 6, seed=5))
  algo = make_algo(cohort=3, chunk=3)
  fn = jax.jit(algo.run_round)

  def run(seed, rounds=3):
    state = algo.init(algo.task.init(jax.random.key(0)))
    base = keylib.base_key(seed)
    ids = []
    for _ in range(rounds):
      state, m = fn(state, pop, base)
      ids.append(np.asarray(m["client_ids"]))
    return state.params, np.stack(ids)

  p_a, ids_a = run(0)
  p_b, ids_b = run(0)
  p_c, ids_c = run(1)
  chex.assert_trees_all_equal(p_a, p_b)
  np.testing.assert_array_equal(ids_a, ids_b)
  assert not np.array_equal(ids_a, ids_c) or not all(
      np.array_equal(a, c) for a, c in zip(jax.tree.leaves(p_a), jax.tree.leaves(p_c)))


def test_round_compiles_once_across_rounds():
  pop = jax.tree.map(jnp.asarray, tiny_population([7, 5, 9, 3, 6], seed=6))
  algo = make_algo(cohort=2, chunk=2)
  traced = chex.assert_max_traces(algo.run_round, n=1)
  fn = jax.jit(traced)
  state = algo.init(algo.task.init(jax.random.key(0)))
  base = keylib.base_key(0)
  for _ in range(4):  # different cohorts and sizes every round, one trace
    state, _ = fn(state, pop, base)
  assert int(state.round) == 4


def test_fedadam_server_optimizer_moves_the_model():
  pop = jax.tree.map(jnp.asarray, tiny_population([8] * 4, seed=7))
  algo = make_algo(cohort=2, chunk=2, server=optax.adam(0.05))
  state = algo.init(algo.task.init(jax.random.key(0)))
  state2, m = jax.jit(algo.run_round)(state, pop, keylib.base_key(0))
  assert np.isfinite(float(m["train_loss"]))
  assert any(float(jnp.abs(a - b).max()) > 1e-3 for a, b in
             zip(jax.tree.leaves(state2.params), jax.tree.leaves(state.params)))


@pytest.mark.parametrize("epochs", [1, 3])
def test_local_training_reduces_loss_on_a_learnable_task(epochs):
  # Labels are a function of the input: several rounds of FedAvg must fit them.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 20, 4)).astype(np.float32)
  y = (x[..., 0] > 0).astype(np.int32) + (x[..., 1] > 0).astype(np.int32)
  pop = jax.tree.map(jnp.asarray, tiny_population([20] * 6)._replace(x=x, y=y))
  algo = make_algo(cohort=3, chunk=3, epochs=epochs)
  fn = jax.jit(algo.run_round)
  state = algo.init(algo.task.init(jax.random.key(0)))
  losses = []
  for _ in range(15):
    state, m = fn(state, pop, keylib.base_key(0))
    losses.append(float(m["train_loss"]))
  assert losses[-1] < 0.6 * losses[0]


class _HalfVisibleDownlink(links.Downlink):
  """Hides the first hidden unit's column (and zeroes it), like a FedQSN mask."""
  bits_per_param = 32.0

  def client_model(self, params, key):
    from fedpriv.fedavg import ClientModel
    visible = jax.tree.map(jnp.ones_like, params)
    visible["hidden"]["kernel"] = visible["hidden"]["kernel"].at[:, 0].set(0.0)
    visible["hidden"]["bias"] = visible["hidden"]["bias"].at[0].set(0.0)
    proxy = jax.tree.map(jnp.multiply, params, visible)
    return ClientModel(proxy, visible)


def test_invisible_coordinates_stay_as_received_through_local_training():
  from fedpriv.fedavg import ClientResult

  seen = {}

  class RecordingUplink(links.Uplink):
    bits_per_param = 32.0

    def encode(self, result: ClientResult, key, context):
      return {"trained": result.trained, "start": result.start}

    def decode(self, total, params, key, context):
      seen.update(total)
      return jax.tree.map(jnp.zeros_like, params)

  pop = jax.tree.map(jnp.asarray, tiny_population([8, 8], seed=8))
  algo = make_algo(cohort=1, chunk=1, epochs=3, downlink=_HalfVisibleDownlink(),
                   uplink=RecordingUplink(), server=optax.sgd(1.0))
  state = algo.init(algo.task.init(jax.random.key(0)))
  algo.run_round(state, pop, keylib.base_key(0))
  trained, start = seen["trained"], seen["start"]
  np.testing.assert_array_equal(trained["hidden"]["kernel"][:, 0], 0.0)
  assert float(trained["hidden"]["bias"][0]) == 0.0
  # Everything visible did train.
  assert float(jnp.abs(trained["hidden"]["kernel"][:, 1:] -
                       start["hidden"]["kernel"][:, 1:]).max()) > 1e-4


def test_a_diverged_client_is_dropped_and_counted():
  pop = tiny_population([8, 8, 8], seed=9)
  x = pop.x.copy()
  x[1, 0, 0] = np.inf  # client 1's first example makes its loss and update NaN
  bad = jax.tree.map(jnp.asarray, pop._replace(x=x))
  algo = make_algo(cohort=3, chunk=3, batch=8)
  params = algo.task.init(jax.random.key(0))
  rkey = keylib.round_key(keylib.base_key(0), 1)
  idx = jnp.tile(jnp.arange(8)[None, None], (3, 1, 1))
  valid = jnp.ones((3, 1, 8), bool)
  cohort = algo.pad_cohort(jnp.array([0, 1, 2]), rkey, batches=(idx, valid))
  state, m = algo.apply(algo.init(params), bad, cohort)
  chex.assert_tree_all_finite(state.params)
  assert int(m["clients_dropped_nonfinite"]) == 1
  assert np.isfinite(float(m["train_loss"]))
  np.testing.assert_allclose(m["client_weight"], [8.0, 0.0, 8.0])
  expected = sequential_fedavg(algo.task, params, pop, [0, 2], [(idx[0], valid[0])] * 2)
  chex.assert_trees_all_close(state.params, expected, atol=1e-5, rtol=1e-5)


def test_dropouts_remove_exactly_that_fraction_and_the_round_averages_the_survivors():
  pop = tiny_population([8] * 10, seed=4)
  pop_j = jax.tree.map(jnp.asarray, pop)
  algo = make_algo(cohort=10, chunk=5, batch=8, dropout=0.3)
  params = algo.task.init(jax.random.key(0))
  rkey = keylib.round_key(keylib.base_key(0), 1)
  idx = jnp.tile(jnp.arange(8)[None, None], (10, 1, 1))
  valid = jnp.ones((10, 1, 8), bool)
  ids = jnp.arange(10)
  cohort = algo.pad_cohort(ids, rkey, batches=(idx, valid))
  state, m = algo.apply(algo.init(params), pop_j, cohort)
  survivors = [i for i, w in enumerate(np.asarray(m["client_weight"])) if w > 0]
  assert len(survivors) == 7 and int(m["clients_dropped_out"]) == 3
  expected = sequential_fedavg(algo.task, params, pop, survivors, [(idx[0], valid[0])] * 7)
  chex.assert_trees_all_close(state.params, expected, atol=1e-5, rtol=1e-5)
  # Who drops out is drawn per round from the seed: another round, other clients.
  later = algo.pad_cohort(ids, keylib.round_key(keylib.base_key(0), 2))
  again = algo.pad_cohort(ids, rkey)
  np.testing.assert_array_equal(again.valid, cohort.valid)
  assert not np.array_equal(later.valid, cohort.valid)


def test_dropout_options_are_checked():
  from fedpriv.config import Config, ConfigError, PrivacyConfig  # pylint: disable=import-outside-toplevel
  with pytest.raises(ConfigError, match=r"config.dropout: must be in \[0, 1\)"):
    Config(dropout=1.0)
  secagg = PrivacyConfig(enabled=True, bits=8, secagg=True)
  with pytest.raises(ConfigError, match="set privacy.dropout instead"):
    Config(dropout=0.1, privacy=secagg)
  with pytest.raises(ConfigError, match="use the top-level dropout"):
    Config(privacy=PrivacyConfig(enabled=True, dropout=0.1))
  Config(dropout=0.2, privacy=PrivacyConfig(enabled=True, noise="central",
                                            noise_multiplier=1.0))
