"""Client sampling and minibatch schedules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fedpriv import keys as keylib
from fedpriv.schedule import client_batches, sample_clients


def test_sampling_is_without_replacement_and_uniform():
  n, m, rounds = 20, 5, 4000
  base = keylib.base_key(0)
  draw = jax.jit(jax.vmap(lambda r: sample_clients(
      keylib.server_key(keylib.round_key(base, r), keylib.SAMPLE_CLIENTS), n, m)))
  ids = np.asarray(draw(jnp.arange(1, rounds + 1)))
  assert all(len(set(row)) == m for row in ids)  # distinct within a round
  counts = np.bincount(ids.ravel(), minlength=n)
  # Each client is expected rounds * m / n times; chi-square test of uniformity.
  p = stats.chisquare(counts).pvalue
  assert p > 1e-3, counts


def test_sampling_rejects_impossible_cohorts():
  with pytest.raises(ValueError):
    sample_clients(jax.random.key(0), 5, 6)


@pytest.mark.parametrize("n_real,n_max,batch,epochs", [(10, 10, 3, 1), (7, 12, 4, 2),
                                                       (1, 5, 2, 3)])
def test_each_epoch_visits_every_real_example_once(n_real, n_max, batch, epochs):
  mask = jnp.arange(n_max) < n_real
  idx, valid = client_batches(jax.random.key(1), mask, epochs, batch)
  spe = -(-n_max // batch)
  assert idx.shape == valid.shape == (epochs * spe, batch)
  for e in range(epochs):
    i = np.asarray(idx[e * spe:(e + 1) * spe]).ravel()
    v = np.asarray(valid[e * spe:(e + 1) * spe]).ravel()
    assert sorted(i[v].tolist()) == list(range(n_real))


def test_epochs_are_shuffled_differently():
  mask = jnp.ones(50, bool)
  idx, _ = client_batches(jax.random.key(2), mask, 2, 10)
  assert not np.array_equal(idx[:5], idx[5:])


def test_real_examples_need_not_be_a_prefix():
  mask = jnp.array([False, True, False, True, True, False])
  idx, valid = client_batches(jax.random.key(3), mask, 1, 2)
  assert sorted(np.asarray(idx)[np.asarray(valid)].tolist()) == [1, 3, 4]
