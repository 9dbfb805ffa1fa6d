"""The privacy audit: a correct mechanism measures below the accountant, a broken one
(noise scaled down 10x, or the clip skipped) is caught, the statistics are sound, and an
audit without the power to exceed the claim is refused.

Every mechanism here has noise multiplier 2 (a Gaussian with mu = 2C / sigma = 1; the
RDP claim is 4.73 at delta 1e-5), inside what 2,400 trials can measure (up to 5.78)."""
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

TRIALS = 2400  # 1,200 evaluation releases per world: the bound can reach 5.78

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
  """Another bug: the code clips at 100x the bound the accountant assumes (made with
  `clip_skipped`), and sizes the noise for the assumed bound."""

  @property
  def central_sigma(self):
    return super().central_sigma / 100

  @property
  def client_sigma(self):
    return super().client_sigma / 100


def broken(uplink, cls, **changes):
  m = uplink.mechanism
  fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
  return dataclasses.replace(uplink, mechanism=cls(**{**fields, **changes}))


def clip_skipped(uplink):
  # The uplink clips at 100 with the noise of clip 1; the accountant's claim (which
  # reads z and the bound in quantizer levels) is unchanged.
  m = uplink.mechanism
  return broken(uplink, NoClip, config=dataclasses.replace(m.config, clip=100.0))


VARIANTS = {"correct": lambda u: u, "noise_cut_10x": lambda u: broken(u, TenfoldLessNoise),
            "clip_skipped": clip_skipped}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("privacy", [CENTRAL, QUANTIZED, DISTRIBUTED],
                         ids=["central", "quantized_masked", "distributed_secagg"])
def test_the_audit_passes_a_correct_mechanism_and_catches_broken_ones(privacy, variant):
  uplink, params = build(privacy)
  claim = audit.claimed_epsilon(uplink.mechanism)
  assert audit.max_measurable_epsilon(TRIALS, 0.05, 1e-5) > claim + 0.5  # it has power
  result = audit.audit(VARIANTS[variant](uplink), params, trials=TRIALS, seed=0)
  assert result.power and result.claimed_epsilon == pytest.approx(claim)
  if variant == "correct":
    assert result.consistent, result
    assert result.epsilon_lower_bound > 0.5, result  # the game does separate the worlds
  else:  # measured against the claim of the mechanism the accountant was told about
    assert result.epsilon_lower_bound > claim, result


def test_the_largest_measurable_bound_and_the_trials_for_power():
  # Every evaluation release right: (alpha/2)^(1/n) vs 1 - (alpha/2)^(1/n).
  n = TRIALS // 2
  p = 0.025 ** (1 / n)
  assert audit.max_measurable_epsilon(TRIALS) == pytest.approx(np.log(p / (1 - p)))
  assert audit.max_measurable_epsilon(4000, delta=1e-5) == pytest.approx(6.2946, abs=1e-3)
  assert audit.max_measurable_epsilon(400, delta=1e-5) == pytest.approx(3.98, abs=0.01)
  # Perfect separation of the worlds reaches exactly that bound.
  eps, _, _ = audit.epsilon_from_scores(np.ones(TRIALS), -np.ones(TRIALS), 1e-5)
  assert eps == pytest.approx(audit.max_measurable_epsilon(TRIALS, delta=1e-5))
  for claim in (1.0, 5.3, 7.3):
    t = audit.trials_for_power(claim, delta=1e-5)
    assert audit.max_measurable_epsilon(t, delta=1e-5) >= claim + 1.0
    assert audit.max_measurable_epsilon(t - 4, delta=1e-5) < claim + 1.0


def test_an_audit_without_power_is_refused():
  uplink, params = build(CENTRAL)
  with pytest.raises(audit.NoPowerError, match="no power: 400 releases"):
    audit.audit(uplink, params, trials=400)


def test_the_bound_is_zero_when_the_worlds_are_the_same():
  rng = np.random.default_rng(0)
  eps, _, _ = audit.epsilon_from_scores(rng.normal(size=4000), rng.normal(size=4000), 1e-5)
  assert eps < 0.3


def test_the_bound_never_exceeds_the_true_epsilon_of_a_known_gaussian():
  # Scores N(+1/2, 1) vs N(-1/2, 1) are the Gaussian mechanism with mu = 1: its exact
  # epsilon at delta 1e-5 (the analytic Gaussian of Balle & Wang 2018) is inside what
  # 2,400 trials can measure, and no bound of 10 independent games may pass it.
  from scipy import optimize, stats  # pylint: disable=import-outside-toplevel

  def exact(mu):
    return optimize.brentq(lambda e: stats.norm.cdf(mu / 2 - e / mu)
                           - np.exp(e) * stats.norm.cdf(-mu / 2 - e / mu) - 1e-5, 0.0, 80.0)

  truth = exact(1.0)
  assert truth < audit.max_measurable_epsilon(TRIALS, delta=1e-5) - 1.0
  for seed in range(10):
    rng = np.random.default_rng(seed)
    eps, _, _ = audit.epsilon_from_scores(rng.normal(0.5, 1, TRIALS),
                                          rng.normal(-0.5, 1, TRIALS), 1e-5)
    assert 0.2 < eps < truth
  # The same assertion fails when the noise is cut: sigma 1/8 (mu = 8) is measured above
  # the mu = 1 truth, so this test could catch a bound that ignores the noise.
  rng = np.random.default_rng(0)
  eps, _, _ = audit.epsilon_from_scores(rng.normal(0.5, 0.125, TRIALS),
                                        rng.normal(-0.5, 0.125, TRIALS), 1e-5)
  assert eps > truth


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
  base = [sys.executable, "-m", "launch.audit",
          "--config=launch/configs/fashion_mnist.py:private_mcmahan"]
  bad = subprocess.run(base + ["--trials=3"], cwd=ROOT, capture_output=True, text=True,
                       check=False)
  assert bad.returncode == 2 and bad.stderr.startswith("error: need --trials"), bad.stderr
  off = subprocess.run(base + ["--config.privacy.enabled=False"], cwd=ROOT,
                       capture_output=True, text=True, check=False)
  assert off.returncode == 2 and "nothing to audit" in off.stderr, off.stderr
  poisson = subprocess.run([sys.executable, "-m", "launch.audit",
                            "--config=launch/configs/fashion_mnist.py:private"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
  assert poisson.returncode == 2 and "fixed-size cohort" in poisson.stderr, poisson.stderr


@requires_fmnist
def test_launch_audit_writes_a_consistent_result_for_the_fixed_size_private_preset(tmp_path):
  out = tmp_path / "audit.json"
  base = [sys.executable, "-m", "launch.audit",
          "--config=launch/configs/fashion_mnist.py:private_mcmahan", "--dim=64", "--cohort=0",
          "--config.clients_per_round=10", "--config.privacy.secagg_neighbors=4"]
  # 400 trials measure at most 3.98, below this config's claim: refused, not run.
  weak = subprocess.run(base + ["--trials=400"], cwd=ROOT, capture_output=True, text=True,
                        check=False)
  assert weak.returncode == 2 and "no power" in weak.stderr, weak.stderr[-2000:]
  # The default picks enough trials for the claim (here z = 4: claim about 2.3).
  cmd = base + [f"--out={out}", "--config.privacy.target_epsilon=0.0",
                "--config.privacy.noise_multiplier=4.0"]
  run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result["consistent"] and result["power"]
  assert result["cohort"] == 10 and result["parameters"] == 64
  assert result["max_measurable"] >= result["claimed_epsilon"] + 1.0
