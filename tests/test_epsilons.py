"""Every epsilon a run reports: against observers (amplified by sampling) and against the
server (composition over a client's participations), each labelled with its relation,
sampling, accountant and delta, by RDP and PLD; and the figures of the review (issue 12)
for the Fashion-MNIST preset's noise, computed independently there."""
from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import pld
from scipy import optimize, stats

from conftest import tiny_population
from fedpriv import keys as keylib
from fedpriv import train
from fedpriv.config import PrivacyConfig
from fedpriv.privacy import accounting
from fedpriv.privacy.mechanism import make_mechanism
from test_private_uplink import _dataset, make

N, M, T = 6000, 100, 30
PRESET_Z = 1.378  # the preset's calibrated noise multiplier (docs/results/update_privacy.md)


def preset(sampling="fixed", capacity=0, **kw):
  cfg = PrivacyConfig(enabled=True, clip=0.1, noise="central", noise_multiplier=PRESET_Z, **kw)
  return make_mechanism(cfg, num_clients=N, cohort=M, rounds=T, size=1000,
                        sampling=sampling, capacity=capacity)


def test_the_review_figures_for_the_preset_noise():
  mech = preset()
  # Against observers (replace-one, without replacement): the calibrated 4.00 (RDP).
  assert accounting.epsilon(mech, T) == pytest.approx(4.00, abs=0.01)
  assert accounting.epsilon_pld(mech, T) == pytest.approx(2.70, abs=0.01)
  # Against the server: 7.3 (RDP) / 6.8 (PLD) for one participation, 10.3 (PLD) for
  # two, 64.7 (PLD) for all 30 rounds.
  assert accounting.server_epsilon(mech, 1, "RDP") == pytest.approx(7.30, abs=0.01)
  assert accounting.server_epsilon(mech, 1, "PLD") == pytest.approx(6.78, abs=0.01)
  assert accounting.server_epsilon(mech, 2, "PLD") == pytest.approx(10.32, abs=0.01)
  assert accounting.server_epsilon(mech, 30, "PLD") == pytest.approx(64.70, abs=0.01)
  # Add/remove with Poisson sampling at the same z (the literature's convention): 0.36.
  assert accounting.epsilon_pld(preset("poisson", capacity=200), T) == pytest.approx(
      0.36, abs=0.01)


def test_the_server_epsilon_of_one_participation_is_a_gaussian_without_sampling():
  # Closed form (Balle & Wang 2018): a Gaussian with mu = sensitivity / sigma is
  # (eps, delta)-DP iff Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu) <= delta. PLD
  # is tight for it; replace-one moves the sum by 2B, so mu = 2 / z.
  mech = preset()
  mu = 2.0 / PRESET_Z
  exact = optimize.brentq(lambda e: stats.norm.cdf(mu / 2 - e / mu)
                          - np.exp(e) * stats.norm.cdf(-mu / 2 - e / mu) - 1e-5, 0.0, 50.0)
  assert accounting.server_epsilon(mech, 1, "PLD") == pytest.approx(exact, abs=0.02)
  assert accounting.server_epsilon(mech, 1, "RDP") > exact  # RDP is an upper bound
  # Poisson (add/remove): the sum moves by B, mu = 1 / z.
  mu = 1.0 / PRESET_Z
  exact = optimize.brentq(lambda e: stats.norm.cdf(mu / 2 - e / mu)
                          - np.exp(e) * stats.norm.cdf(-mu / 2 - e / mu) - 1e-5, 0.0, 50.0)
  assert accounting.server_epsilon(preset("poisson", 200), 1, "PLD") == pytest.approx(
      exact, abs=0.02)


def test_every_claim_names_its_conventions_and_pld_is_no_looser_than_rdp():
  for mech in (preset(), preset("poisson", capacity=200)):
    claims = {c["name"]: c for c in accounting.claims(mech, T, max_participations=3)}
    assert set(claims) == {"observer_rdp", "observer_pld", "server_one_rdp",
                           "server_one_pld", "server_max_rdp", "server_max_pld"} | (
                               {"observer_replace_pld"} if mech.poisson else set())
    for name, c in claims.items():
      assert c["relation"] == ("add/remove" if mech.poisson and name != "observer_replace_pld"
                               else "replace-one")
      assert c["accountant"].split()[0] in ("RDP", "PLD")
      assert c["delta"] >= 1e-5 and c["valid"] == "yes"
      assert c["sampling"] and c["threat_model"]
    for name in ("observer", "server_one", "server_max"):
      assert claims[f"{name}_pld"]["epsilon"] <= claims[f"{name}_rdp"]["epsilon"]
    assert claims["server_max_rdp"]["participations"] == 3
    assert claims["server_max_rdp"]["epsilon"] > claims["server_one_rdp"]["epsilon"]
    assert claims["server_one_rdp"]["epsilon"] > claims["observer_rdp"]["epsilon"]
    assert "Poisson" in claims["observer_rdp"]["sampling"] if mech.poisson else (
        "without replacement" in claims["observer_rdp"]["sampling"])
  sim = preset(reproducible_noise=True)
  assert all(c["valid"].startswith("simulation only") for c in accounting.claims(sim, T, 1))


def test_poisson_replace_one_claim_matches_the_integral_of_its_pair():
  # One round at q = 0.1: the exact hockey-stick epsilon of ((1-q) N(0) + q N(B),
  # (1-q) N(0) + q N(-B)) at delta 1e-5, by numerical integration on a fine grid.
  q, z = 0.1, 1.0
  def mech_at(z):
    cfg = PrivacyConfig(enabled=True, clip=0.1, noise="central", noise_multiplier=z)
    return make_mechanism(cfg, num_clients=1000, cohort=100, rounds=5, size=1000,
                          sampling="poisson", capacity=200)
  mech = mech_at(z)
  x = np.linspace(-40.0, 40.0, 1_000_001)
  p = (1 - q) * stats.norm.pdf(x) + q * stats.norm.pdf(x, 1.0)
  r = (1 - q) * stats.norm.pdf(x) + q * stats.norm.pdf(x, -1.0)
  hockey = lambda e: np.sum(np.maximum(p - np.exp(e) * r, 0.0)) * (x[1] - x[0]) - 1e-5
  exact = optimize.brentq(hockey, 0.0, 20.0)
  assert accounting.epsilon_replace_one(mech, 1) == pytest.approx(exact, abs=0.01)
  # Swapping a client is worse than removing one, and more noise helps.
  assert exact > accounting.epsilon_pld(mech, 1) + 0.05
  assert accounting.epsilon_replace_one(mech_at(2.0), 5) < accounting.epsilon_replace_one(mech, 5)
  with pytest.raises(ValueError, match="Poisson"):
    accounting.epsilon_replace_one(preset(), 1)


def test_poisson_is_accounted_add_remove_at_z_and_charges_truncation_to_delta():
  mech = preset("poisson", capacity=200)
  direct = pld.PLDAccountant(neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE)
  direct.compose(dpa.SelfComposedDpEvent(
      dpa.PoissonSampledDpEvent(M / N, dpa.GaussianDpEvent(PRESET_Z)), T))
  assert accounting.epsilon_pld(mech, T) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)
  # Capacity 200 for an expected 100 of 6,001: overflow is astronomically unlikely.
  assert accounting.overflow_probability(mech) < 1e-15
  # A tight capacity: the delta grows by (1 + e^eps) T P(Binomial(N+1, q) > capacity).
  tight = preset("poisson", capacity=135)
  p = accounting.overflow_probability(tight)
  assert p == pytest.approx(stats.binom.sf(135, N + 1, M / N))
  claim = accounting.claims(tight, T, 1)[0]
  assert claim["delta"] == pytest.approx(1e-5 + (1 + math.exp(claim["epsilon"])) * T * p)
  assert 1e-5 < claim["delta"] < 1.0
  # Tighter still, the sum passes 1: the claim's delta is capped at 1 (it says nothing).
  assert accounting.claims(preset("poisson", capacity=110), T, 1)[0]["delta"] == 1.0
  # No noise: epsilon is infinite and the delta stays the accountant's (it was once
  # (1 + e^700) T p, a delta of 1e289); a delta never exceeds 1.
  noiseless = make_mechanism(PrivacyConfig(enabled=True, clip=0.1, noise="none"),
                             num_clients=N, cohort=M, rounds=T, size=1000, sampling="poisson",
                             capacity=110)
  claim = accounting.claims(noiseless, T, 1)[0]
  assert claim["epsilon"] == math.inf and claim["delta"] == 1e-5


def test_a_run_reports_both_threat_models_and_the_most_participations(tmp_path):
  pop = tiny_population([8] * 8, seed=7)
  cfg, algo, report = make(PrivacyConfig(enabled=True, clip=0.5, noise="central",
                                         noise_multiplier=1.0), num_clients=8, rounds=3)
  exp = train.Experiment(cfg, _dataset(pop), algo.task, algo, [report])
  summary = train.run(exp, tmp_path, log=lambda *_: None)
  counts = np.zeros(8, int)
  for r in range(1, 4):
    ids = np.asarray(algo.sample_cohort(keylib.base_key(cfg.seed), r, 8).client_ids)
    counts[ids[:cfg.clients_per_round]] += 1
  assert summary["privacy_max_participations"] == counts.max() >= 2
  claims = {c["name"]: c for c in summary["epsilons"]}
  mech = algo.uplink.mechanism
  assert claims["server_max_rdp"]["epsilon"] == pytest.approx(
      accounting.server_epsilon(mech, int(counts.max())))
  assert summary["epsilon"] == claims["observer_rdp"]["epsilon"]
  assert "observer_rdp" in summary["epsilon_label"]
  # A resumed run rebuilds the counts from the cohorts (keys are counters).
  report.participations = None
  report.on_resume(exp, None, 3)
  assert report.max_participations == counts.max()
  np.testing.assert_array_equal(report.participations, counts)
