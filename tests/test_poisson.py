"""Poisson sampling of clients: a variable cohort padded to a fixed capacity (one compile),
truncation to the capacity, the mean divided by the expected count, and secure
aggregation whose masks still cancel with padded slots."""
from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv import rounds as roundlib
from fedpriv import train
from fedpriv.config import Config, ConfigError, PrivacyConfig, cohort_capacity
from fedpriv.fedavg import FedAvg
from fedpriv.privacy import setup
from fedpriv.schedule import poisson_clients
from test_private_uplink import _dataset

N, EXPECTED, CAPACITY = 10, 4, 8


def test_each_client_is_sampled_independently_with_probability_q():
  keys = jax.random.split(jax.random.key(0), 4000)
  ids, count = jax.vmap(lambda k: poisson_clients(k, 50, 0.1, 50))(keys)
  count = np.asarray(count)
  assert abs(count.mean() - 5.0) < 0.15 and abs(count.var() - 4.5) < 0.5  # Binomial(50, .1)
  hits = np.zeros(50)
  for row, n in zip(np.asarray(ids), count):
    assert np.all(np.diff(row[:n]) > 0) and np.all(row[n:] == 0)
    hits[row[:n]] += 1
  assert abs(hits / 4000 - 0.1).max() < 0.03  # no client favoured


def test_a_draw_over_the_capacity_keeps_a_random_subset():
  keys = jax.random.split(jax.random.key(1), 2000)
  ids, count = jax.vmap(lambda k: poisson_clients(k, 20, 0.5, 5))(keys)
  count, ids = np.asarray(count), np.asarray(ids)
  assert count.max() == 5 and (count == 5).mean() > 0.9
  hits = np.bincount(ids[count == 5].ravel(), minlength=20)
  assert hits.min() > 0.6 * hits.mean()  # not the lowest ids first


def algorithm(privacy=None, rounds=4, chunk=2):
  cfg = Config(num_clients=N, clients_per_round=EXPECTED, rounds=rounds,
               client_sampling="poisson", client_capacity=CAPACITY,
               privacy=privacy or PrivacyConfig())
  task = tiny_task()
  kw, report = {}, None
  if privacy is not None:
    kw["uplink"], report = setup.build(cfg, task, N)
  algo = FedAvg(task=task, client_optimizer=optax.sgd(0.1), server_optimizer=optax.sgd(1.0),
                clients_per_round=EXPECTED, local_epochs=1, batch_size=4, chunk_size=chunk,
                client_sampling="poisson", capacity=cohort_capacity(cfg, N), **kw)
  return cfg, algo, report


def run_rounds(algo, pop, rounds, base):
  state = algo.init(algo.task.init(jax.random.key(0)), noise_key=jax.random.key(5))
  round_fn = roundlib.compile_round(algo, state, pop, base, 1)  # assert_max_traces(n=1)
  counts = []
  for _ in range(rounds):
    state, m, _ = round_fn(state, pop, base)
    counts.append(int(m["clients_sampled"]))
  return state, counts


def test_secure_aggregation_with_a_variable_cohort_decodes_exactly_the_plain_sum():
  chex.clear_trace_counter()
  pop = jax.tree.map(jnp.asarray, tiny_population([8, 5, 8, 7, 8, 6, 8, 8, 4, 8], seed=8))
  q = dict(enabled=True, clip=0.5, bits=10, mask_ratio=0.3)
  _, quant, _ = algorithm(PrivacyConfig(**q))
  _, sec, _ = algorithm(PrivacyConfig(**q, secagg=True, secagg_neighbors=2))
  base = keylib.base_key(3)
  a, counts = run_rounds(quant, pop, 6, base)
  chex.clear_trace_counter()
  b, _ = run_rounds(sec, pop, 6, base)
  assert len(set(counts)) > 1  # the cohort size did vary (and compiled once)
  chex.assert_trees_all_equal(a.params, b.params)


def test_the_mean_divides_by_the_expected_count_not_the_drawn_one():
  pop = jax.tree.map(jnp.asarray, tiny_population([8] * N, seed=9))  # equal weights
  cfg, plain, _ = algorithm(None)
  _, private, _ = algorithm(PrivacyConfig(enabled=True, clip=1e6))
  for seed in range(100):  # the first seed whose round-1 draw is not the expected count
    base = keylib.base_key(seed)
    cohort = plain.sample_cohort(base, 1, N)
    n = int(cohort.valid.sum())
    if n not in (0, EXPECTED):
      break
  assert n not in (0, EXPECTED)
  start = plain.init(plain.task.init(jax.random.key(0)))
  a, _ = plain.apply(start, pop, cohort, base)
  b, _ = private.apply(private.init(private.task.init(jax.random.key(0))), pop, cohort, base)
  step_plain = jax.tree.map(jnp.subtract, a.params, start.params)
  step_private = jax.tree.map(jnp.subtract, b.params, start.params)
  chex.assert_trees_all_close(step_private, jax.tree.map(lambda x: x * n / EXPECTED,
                                                         step_plain), atol=1e-6)
  del cfg


def test_the_driver_runs_a_variable_cohort_with_one_compile(tmp_path):
  pop = tiny_population([8] * N, seed=10)
  cfg, algo, report = algorithm(PrivacyConfig(enabled=True, clip=0.5, noise="central",
                                              noise_multiplier=1.0), rounds=4)
  exp = train.Experiment(cfg, _dataset(pop), algo.task, algo, [report])
  summary = train.run(exp, tmp_path, log=lambda *_: None)  # assert_max_traces(n=1) inside
  assert summary["rounds"] == 4
  claims = {c["name"]: c for c in summary["epsilons"]}
  assert claims["observer_rdp"]["relation"] == "add/remove"
  assert "Poisson" in claims["observer_rdp"]["sampling"]


def test_capacity_is_sized_from_the_overflow_probability():
  from scipy import stats  # pylint: disable=import-outside-toplevel
  cfg = Config(num_clients=6000, clients_per_round=100, rounds=30, client_sampling="poisson")
  cap = cohort_capacity(cfg, 6000)
  assert stats.binom.sf(cap, 6001, 100 / 6000) * 30 <= 1e-12
  assert stats.binom.sf(cap - 1, 6001, 100 / 6000) * 30 > 1e-12
  assert cohort_capacity(Config(num_clients=6000, clients_per_round=100), 6000) == 100


def _ddg_poisson(n=200, expected=100, rounds=4, **kw):
  cfg = Config(num_clients=n, clients_per_round=expected, rounds=rounds,
               client_sampling="poisson",
               privacy=PrivacyConfig(enabled=True, bits=12, clip=0.5, secagg=True,
                                     secagg_neighbors=4, noise="distributed", **kw))
  uplink, report = setup.build(cfg, tiny_task(), n)
  return cfg, uplink, report


def test_distributed_noise_with_poisson_sizes_shares_for_the_floor_and_pays_its_tail():
  from scipy import stats  # pylint: disable=import-outside-toplevel
  from fedpriv.privacy import accounting  # pylint: disable=import-outside-toplevel
  from fedpriv.privacy.privatizers import codes_center  # pylint: disable=import-outside-toplevel
  from fedpriv.privacy.secagg import required_ring_bits  # pylint: disable=import-outside-toplevel
  _, uplink, _ = _ddg_poisson(noise_multiplier=1.0)
  mech = uplink.mechanism
  m, p = mech.min_cohort, 1e-12 / 4
  # m_min: fewer of a client's 199 others are drawn with probability <= p; m_min + 1 not.
  assert stats.binom.cdf(m - 1, 199, 0.5) <= p < stats.binom.cdf(m, 199, 0.5)
  assert 0 < m < 100 < mech.capacity
  assert mech.survivors == m
  assert mech.client_sigma == pytest.approx(mech.sum_noise_multiplier * mech.level_bound /
                                            np.sqrt(m))
  # The ring holds capacity shares of that sigma, not only the planned sum's noise.
  assert mech.ring_bits >= required_ring_bits(
      mech.capacity, codes_center(12), mech.client_sigma * np.sqrt(mech.capacity))
  # Each observer claim pays for both tails of the draw in delta.
  p_under = accounting.underflow_probability(mech)
  assert 0 < p_under <= p
  eps = accounting.epsilon(mech, 4)
  extra = (1 + np.exp(eps)) * 4 * (p_under + accounting.overflow_probability(mech))
  assert accounting.observer_delta(mech, eps, 4) == pytest.approx(mech.config.delta + extra)
  # The accountant's z' counts the floor's shares: fewer shares, less privacy.
  more = dataclasses.replace(mech, cohort=150)
  assert more.min_cohort > m
  assert accounting.accountant_noise_multiplier(more) > accounting.accountant_noise_multiplier(
      mech)


@pytest.mark.parametrize("noise", [dict(noise_multiplier=1.0), dict(target_epsilon=2.0)])
def test_distributed_noise_with_poisson_refuses_a_cohort_with_no_floor(noise):
  # q = 0.4 of 10 clients: a round draws none of a client's 9 others with probability
  # 0.6^9 = 0.01, far above 1e-12 / T, so no share size covers the sum.
  cfg = Config(num_clients=N, clients_per_round=EXPECTED, rounds=4, client_sampling="poisson",
               privacy=PrivacyConfig(enabled=True, bits=8, secagg=True, noise="distributed",
                                     **noise))
  with pytest.raises(ConfigError, match="clients_per_round: Poisson sampling with q = 0.4"):
    setup.build(cfg, tiny_task(), N)


def test_distributed_noise_with_poisson_adds_each_drawn_clients_share():
  chex.clear_trace_counter()
  n, expected = 200, 100
  pop = jax.tree.map(jnp.asarray, tiny_population([4] * n, seed=11))
  algos = []
  for noise in ("none", "distributed"):
    kw = dict(noise_multiplier=1.0) if noise == "distributed" else {}
    cfg = Config(num_clients=n, clients_per_round=expected, rounds=4,
                 client_sampling="poisson",
                 privacy=PrivacyConfig(enabled=True, bits=12, clip=0.5, secagg=True,
                                       secagg_neighbors=4, noise=noise, **kw))
    uplink, _ = setup.build(cfg, tiny_task(), n)
    algos.append(FedAvg(task=tiny_task(), client_optimizer=optax.sgd(0.1),
                        server_optimizer=optax.sgd(1.0), clients_per_round=expected,
                        local_epochs=1, batch_size=4, chunk_size=8,
                        client_sampling="poisson", capacity=cohort_capacity(cfg, n),
                        uplink=uplink))
  quiet, noisy = algos
  mech = noisy.uplink.mechanism
  base = keylib.base_key(6)
  (a, _), (b, counts) = run_rounds(quiet, pop, 1, base), run_rounds(noisy, pop, 1, base)
  diff = np.concatenate([np.ravel(x - y) for x, y in zip(jax.tree.leaves(b.params),
                                                          jax.tree.leaves(a.params))])
  # Each of the drawn clients adds a share of client_sigma levels; the mean divides the
  # sum by the expected count. So the noise on the mean is sqrt(drawn) shares, not the
  # sqrt(m_min) the accountant counts on (more noise: the price of a fixed share).
  expect = mech.client_sigma * np.sqrt(counts[0]) * mech.step / expected
  assert counts[0] > mech.min_cohort
  assert 0.8 * expect < diff.std() < 1.2 * expect


def test_the_driver_runs_the_whole_stack_with_poisson_and_counts_each_rounds_draw(tmp_path):
  # Secure aggregation and distributed noise with a variable cohort, through the driver:
  # the ledger counts the clients each round drew, not the expected count.
  from fedpriv.privacy import ledger  # pylint: disable=import-outside-toplevel
  n, expected = 200, 100
  pop = tiny_population([4] * n, seed=12)
  cfg = Config(num_clients=n, clients_per_round=expected, rounds=2,
               client_sampling="poisson",
               privacy=PrivacyConfig(enabled=True, bits=8, clip=0.5, secagg=True,
                                     secagg_neighbors=4, mask_ratio=0.5,
                                     noise="distributed", noise_multiplier=1.0))
  uplink, report = setup.build(cfg, tiny_task(), n)
  algo = FedAvg(task=tiny_task(), client_optimizer=optax.sgd(0.1),
                server_optimizer=optax.sgd(1.0), clients_per_round=expected, local_epochs=1,
                batch_size=4, chunk_size=8, client_sampling="poisson",
                capacity=cohort_capacity(cfg, n), uplink=uplink, secret_cohorts=True)
  seen = []
  original = ledger.round_bits

  def spy(*args, **kw):
    bits = original(*args, **kw)
    seen.append((int(kw["sampled"]), bits.uplink.size))
    return bits
  ledger_round_bits = ledger.round_bits
  try:
    ledger.round_bits = spy
    exp = train.Experiment(cfg, _dataset(pop), algo.task, algo, [report])
    summary = train.run(exp, tmp_path, log=lambda *_: None)
  finally:
    ledger.round_bits = ledger_round_bits
  assert summary["rounds"] == 2 and summary["privacy_min_cohort"] == uplink.mechanism.min_cohort
  assert len(seen) == 2 and all(drawn == size for drawn, size in seen)
  assert summary["uplink_bits_per_param"] > 0
  observer = next(c for c in summary["epsilons"] if c["name"] == "observer_rdp")
  assert observer["delta"] > cfg.privacy.delta  # the draw's tails are paid for


def test_the_ledger_counts_a_poisson_round_without_secure_aggregation_by_its_draw():
  from fedpriv.privacy import ledger  # pylint: disable=import-outside-toplevel
  _, algo, _ = algorithm(PrivacyConfig(enabled=True, clip=0.5, noise="central",
                                       noise_multiplier=1.0))
  mech = algo.uplink.mechanism
  for drawn in (2, 7):  # below and above the expected 4
    bits = ledger.round_bits(mech, 32.0, sampled=drawn)
    assert bits.uplink.size == drawn
    assert bits.uplink.sum() == drawn * ledger.vector_bits(mech)
