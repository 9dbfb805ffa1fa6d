"""Cohorts drawn from the run's secret key when update privacy is on.

The epsilon against observers rests on amplification by sampling, which needs the
cohorts to be secret; the seed is written into config.json, so a private run must not
draw them from it.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv import train
from fedpriv.config import Config, PrivacyConfig
from test_private_uplink import _dataset, make

N, ROUNDS = 16, 6


def _ids(algo, base, rnd, noise_seed=None):
  cohort = algo.sample_cohort(base, rnd, N, noise_seed)
  return sorted(np.asarray(cohort.client_ids)[np.asarray(cohort.valid)].tolist())


def _secret_algo():
  cfg, algo, report = make(PrivacyConfig(enabled=True, clip=0.5, noise="central",
                                         noise_multiplier=1.0), num_clients=N,
                           rounds=ROUNDS, cohort=4)
  return cfg, dataclasses.replace(algo, secret_cohorts=True), report


@pytest.mark.parametrize("privacy, secret", [
    (PrivacyConfig(), False),
    (PrivacyConfig(enabled=True, clip=0.5, noise="central", noise_multiplier=1.0), True),
    (PrivacyConfig(enabled=True, clip=0.5, noise="central", noise_multiplier=1.0,
                   reproducible_noise=True),
     False),
])
def test_the_experiment_draws_cohorts_in_secret_exactly_when_privacy_needs_it(
    privacy, secret, monkeypatch):
  pop = tiny_population([8] * N, seed=1)
  monkeypatch.setattr(train, "load_dataset", lambda cfg: _dataset(pop))
  monkeypatch.setattr(train, "make_task", lambda *a, **k: tiny_task())
  cfg = Config(num_clients=N, clients_per_round=4, rounds=2, privacy=privacy)
  assert train.build(cfg).algorithm.secret_cohorts == secret


def test_secret_cohorts_follow_the_secret_key_not_the_seed():
  _, algo, _ = _secret_algo()
  base = keylib.base_key(0)
  k1 = jax.random.key_data(keylib.secret_key())
  k2 = jax.random.key_data(keylib.secret_key())
  same = [_ids(algo, base, r, k1) == _ids(algo, base, r, k1) for r in range(1, ROUNDS + 1)]
  assert all(same)
  # Another secret draws other cohorts (all six rounds equal by chance: (1/1820)^6).
  assert any(_ids(algo, base, r, k1) != _ids(algo, base, r, k2) for r in range(1, ROUNDS + 1))
  # Another seed with the same secret draws the same clients: the seed plays no part.
  other = keylib.base_key(12345)
  assert all(_ids(algo, base, r, k1) == _ids(algo, other, r, k1) for r in range(1, ROUNDS + 1))
  # Without the secret the draw is refused rather than silently taken from the seed.
  with pytest.raises(ValueError, match="noise_seed"):
    algo.sample_cohort(base, 1, N)


def test_a_public_cohort_algorithm_ignores_the_secret():
  _, algo, _ = make(None, num_clients=N, cohort=4)
  base = keylib.base_key(0)
  k = jax.random.key_data(keylib.secret_key())
  assert all(_ids(algo, base, r) == _ids(algo, base, r, k) for r in range(1, ROUNDS + 1))


def test_a_private_run_draws_its_cohorts_from_its_secret_and_a_resume_recounts_them(
    tmp_path, monkeypatch):
  raw = np.asarray(jax.random.key_data(keylib.secret_key()))
  fixed = lambda: jax.random.wrap_key_data(raw.copy())  # a fresh buffer: the run donates it
  monkeypatch.setattr(keylib, "secret_key", fixed)
  pop = tiny_population([8] * N, seed=7)
  cfg, algo, report = _secret_algo()
  exp = train.Experiment(cfg, _dataset(pop), algo.task, algo, [report])
  summary = train.run(exp, tmp_path / "a", log=lambda *_: None)
  base = keylib.base_key(cfg.seed)
  secret = raw
  by_secret, by_seed = np.zeros(N, int), np.zeros(N, int)
  public = dataclasses.replace(algo, secret_cohorts=False)
  for r in range(1, ROUNDS + 1):
    by_secret[_ids(algo, base, r, secret)] += 1
    by_seed[_ids(public, base, r)] += 1
  # The run counted exactly the secret key's cohorts...
  np.testing.assert_array_equal(report.participations, by_secret)
  assert summary["privacy_max_participations"] == by_secret.max()
  # ...not the seed's (which anyone holding config.json could draw).
  assert not np.array_equal(by_secret, by_seed)
  # A resume rebuilds the counts from the restored state's secret.
  state = algo.init(algo.task.init(keylib.init_key(base)), fixed())
  report.participations = None
  report.on_resume(exp, state, ROUNDS)
  np.testing.assert_array_equal(report.participations, by_secret)


def test_extraction_attacks_refuse_more_attackers_than_a_round_holds_before_training():
  from fedpriv.fedqsn.attacks import AttackHook  # pylint: disable=import-outside-toplevel
  cfg, algo, _ = _secret_algo()
  exp = train.Experiment(cfg, _dataset(tiny_population([8] * N, seed=7)), algo.task, algo, [])
  with pytest.raises(ValueError, match="5 attackers/colluders, but a round has only 4"):
    AttackHook(attackers=3, colluders=5).on_start(exp, algo.task.init(jax.random.key(0)))
