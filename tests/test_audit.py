"""The privacy audit: a correct mechanism measures below the accountant, a broken one
(noise scaled down 10x, or the clip skipped) is caught, and the statistics are sound."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, requires_fmnist, tiny_task
from fedpriv.config import Config, PrivacyConfig
from fedpriv.privacy import audit, setup
from fedpriv.privacy.mechanism import Mechanism

TRIALS = 4000  # 2,000 evaluation releases per world: the bound can reach ~6.3

CENTRAL = PrivacyConfig(enabled=True, clip=1.0, noise="central", noise_multiplier=2.0)
QUANTIZED = PrivacyConfig(enabled=True, clip=1.0, bits=8, mask_ratio=0.5, noise="central",
                          noise_multiplier=2.0)
DISTRIBUTED = PrivacyConfig(enabled=True, clip=1.0, bits=12, secagg=True,
                            noise="distributed", noise_multiplier=2.0)


def build(privacy: PrivacyConfig, cohort: int = 4):
  task = tiny_task()
  cfg = Config(num_clients=100, clients_per_round=cohort, rounds=10, privacy=privacy)
  uplink, _ = setup.build(cfg, task, 100)
  return uplink, task.init(jax.random.key(0))


class TenfoldLessNoise(Mechanism):
  """The bug the audit must catch: the noise path uses a tenth of the planned sigma
  while the accountant still reads the declared noise multiplier."""

  @property
  def central_sigma(self):
    return super().central_sigma / 10

  @property
  def client_sigma(self):
    return super().client_sigma / 10


class NoClip(Mechanism):
  """Another bug: the clip the accountant assumes is 100x larger in the code."""


def broken(uplink, cls, **changes):
  m = uplink.mechanism
  fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
  return dataclasses.replace(uplink, mechanism=cls(**{**fields, **changes}))


@pytest.mark.parametrize("privacy", [CENTRAL, QUANTIZED, DISTRIBUTED],
                         ids=["central", "quantized_masked", "distributed_secagg"])
def test_a_correct_mechanism_measures_below_the_accountant(privacy):
  uplink, params = build(privacy)
  result = audit.audit(uplink, params, trials=TRIALS, seed=0)
  assert result.claimed_epsilon == pytest.approx(audit.claimed_epsilon(uplink.mechanism))
  assert result.consistent, result
  # The game does separate the worlds: a positive, informative bound.
  assert result.epsilon_lower_bound > 0.5, result


@pytest.mark.parametrize("privacy", [CENTRAL, DISTRIBUTED], ids=["central", "distributed"])
def test_the_audit_catches_noise_scaled_down_tenfold(privacy):
  uplink, params = build(privacy)
  result = audit.audit(broken(uplink, TenfoldLessNoise), params, trials=TRIALS, seed=0)
  assert not result.consistent, result
  assert result.epsilon_lower_bound > result.claimed_epsilon + 1.0


def test_the_audit_catches_a_clip_the_code_does_not_apply():
  uplink, params = build(CENTRAL)
  # The uplink clips at 100 while the accountant's claim is for clip 1 and the same sigma.
  bad = broken(uplink, NoClip, config=dataclasses.replace(CENTRAL, clip=100.0),
               noise_multiplier=2.0 / 100)
  bad_claim = audit.claimed_epsilon(uplink.mechanism)
  result = audit.audit(bad, params, trials=TRIALS, seed=0)
  assert result.epsilon_lower_bound > bad_claim, result


def test_the_bound_is_zero_when_the_worlds_are_the_same():
  rng = np.random.default_rng(0)
  eps, _, _ = audit.epsilon_from_scores(rng.normal(size=4000), rng.normal(size=4000), 1e-5)
  assert eps < 0.3


def test_the_bound_never_exceeds_the_true_epsilon_of_a_known_gaussian():
  # Scores N(+1, 1) vs N(-1, 1) are the Gaussian mechanism with sensitivity 2 and sigma 1:
  # its exact epsilon at delta 1e-5 (the analytic Gaussian of Balle & Wang 2018, about
  # 10.0) must never be passed by the bound of any of 10 independent games.
  from scipy import optimize, stats  # pylint: disable=import-outside-toplevel
  mu = 2.0
  exact = optimize.brentq(lambda e: stats.norm.cdf(mu / 2 - e / mu)
                          - np.exp(e) * stats.norm.cdf(-mu / 2 - e / mu) - 1e-5, 0.0, 50.0)
  for seed in range(10):
    rng = np.random.default_rng(seed)
    eps, _, _ = audit.epsilon_from_scores(rng.normal(1, 1, 4000), rng.normal(-1, 1, 4000), 1e-5)
    assert 0.5 < eps < exact


def test_bad_inputs_are_refused():
  uplink, params = build(PrivacyConfig(enabled=True, clip=1.0))
  with pytest.raises(ValueError, match="adds no noise"):
    audit.audit(uplink, params)
  uplink, params = build(CENTRAL)
  with pytest.raises(ValueError, match="trials"):
    audit.audit(uplink, params, trials=5)
  with pytest.raises(ValueError, match="1-d score arrays"):
    audit.epsilon_from_scores(np.zeros(100), np.zeros(50), 1e-5)


def test_launch_audit_refuses_bad_flags_and_noiseless_configs():
  base = [sys.executable, "-m", "launch.audit", "--config=launch/configs/fashion_mnist.py:private"]
  bad = subprocess.run(base + ["--trials=3"], cwd=ROOT, capture_output=True, text=True,
                       check=False)
  assert bad.returncode == 2 and bad.stderr.startswith("error: need --trials"), bad.stderr
  off = subprocess.run(base + ["--config.privacy.enabled=False"], cwd=ROOT,
                       capture_output=True, text=True, check=False)
  assert off.returncode == 2 and "nothing to audit" in off.stderr, off.stderr


@requires_fmnist
def test_launch_audit_writes_a_consistent_result_for_the_private_preset(tmp_path):
  out = tmp_path / "audit.json"
  cmd = [sys.executable, "-m", "launch.audit", "--config=launch/configs/fashion_mnist.py:private",
         "--dim=64", "--cohort=0", "--trials=400", f"--out={out}",
         "--config.clients_per_round=10", "--config.privacy.secagg_neighbors=4"]
  run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result["consistent"] and result["cohort"] == 10 and result["parameters"] == 64
  assert 0 < result["claimed_epsilon"] < float("inf")
