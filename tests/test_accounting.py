"""The accountant: reported epsilon equals a direct dp_accounting computation of the same
mechanism; the library's REPLACE_ONE convention is pinned; calibration meets the target."""
from __future__ import annotations

import dataclasses
import math

import dp_accounting as dpa
import pytest
from dp_accounting import pld, rdp

from fedpriv.config import PrivacyConfig
from fedpriv.privacy import accounting
from fedpriv.privacy.mechanism import make_mechanism

N, M, T, D = 2000, 50, 40, 10_000


def central(z=1.5, **kw):
  cfg = PrivacyConfig(enabled=True, clip=0.7, noise="central", noise_multiplier=z, **kw)
  return make_mechanism(cfg, num_clients=N, cohort=M, rounds=T, size=D)


def test_dp_accounting_wor_normalises_by_the_replace_one_sensitivity():
  # q = 1 (everyone sampled) must be the plain Gaussian RDP alpha / (2 z^2): the
  # library treats z as sigma / sensitivity of the query, so callers pass sigma / (2C)
  # under REPLACE_ONE. If an upgrade starts doubling internally, this fails, and
  # `accounting.accountant_noise_multiplier` must change with it.
  z = 1.3
  wor = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
  wor.compose(dpa.SampledWithoutReplacementDpEvent(10, 10, dpa.GaussianDpEvent(z)))
  plain = rdp.RdpAccountant()
  plain.compose(dpa.GaussianDpEvent(z))
  assert math.isclose(wor.get_epsilon(1e-5), plain.get_epsilon(1e-5), rel_tol=1e-9)


def test_reported_epsilon_equals_a_direct_dp_accounting_computation():
  mech = central(z=1.5)
  direct = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
  direct.compose(dpa.SelfComposedDpEvent(
      dpa.SampledWithoutReplacementDpEvent(N, M, dpa.GaussianDpEvent(1.5 / 2)), T))
  assert accounting.epsilon(mech, T) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-12)
  pld_acc = pld.PLDAccountant()
  pld_acc.compose(dpa.SelfComposedDpEvent(
      dpa.PoissonSampledDpEvent(M / N, dpa.GaussianDpEvent(1.5 / 2)), T))
  assert accounting.epsilon_pld(mech, T) == pytest.approx(pld_acc.get_epsilon(1e-5),
                                                          rel=1e-9)
  # More rounds, more epsilon; more noise, less.
  assert accounting.epsilon(mech, T // 2) < accounting.epsilon(mech, T)
  assert accounting.epsilon(central(z=3.0), T) < accounting.epsilon(mech, T)


def test_no_noise_is_no_privacy():
  mech = make_mechanism(PrivacyConfig(enabled=True, clip=1.0), num_clients=N, cohort=M,
                        rounds=T, size=D)
  assert math.isinf(accounting.epsilon(mech, T))


def test_distributed_discrete_gaussian_uses_the_ddg_bound():
  cfg = PrivacyConfig(enabled=True, clip=1.0, bits=12, noise="distributed",
                      noise_multiplier=1.2, secagg=True, dropout=0.1,
                      secagg_threshold=0.6)
  mech = make_mechanism(cfg, num_clients=N, cohort=M, rounds=T, size=D)
  share = 1.2 * mech.level_bound / math.sqrt(mech.survivors)
  assert mech.client_sigma == pytest.approx(share)
  z_acc = accounting.accountant_noise_multiplier(mech)
  # For shares of tens of levels tau underflows: z' = sqrt(n) s / (2 Delta) = z / 2.
  assert z_acc == pytest.approx(1.2 / 2, rel=1e-12)
  # Tiny shares: the DDG correction makes the mechanism count as less private.
  eps_small = accounting.ddg_epsilon(2.0, 2.0 * math.sqrt(D), 5, 0.6, D)
  assert eps_small > 2.0 / (math.sqrt(5) * 0.6)
  direct = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
  direct.compose(dpa.SelfComposedDpEvent(
      dpa.SampledWithoutReplacementDpEvent(N, M, dpa.GaussianDpEvent(z_acc)), T))
  assert accounting.epsilon(mech, T) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-12)


def test_target_epsilon_calibrates_the_noise_multiplier():
  target = 3.0
  cfg = PrivacyConfig(enabled=True, clip=1.0, noise="central", target_epsilon=target)
  mech = make_mechanism(cfg, num_clients=N, cohort=M, rounds=T, size=D)
  eps = accounting.epsilon(mech, T)
  assert eps <= target and eps > 0.97 * target
  lower = dataclasses.replace(mech, noise_multiplier=mech.noise_multiplier * 0.98)
  assert accounting.epsilon(lower, T) > target  # it is (nearly) the smallest such z


# -- against published closed forms and figures (issue 12, item 6) ---------------------


def _gaussian_exact_epsilon(mu: float, delta: float) -> float:
  """The exact epsilon of the Gaussian mechanism with sensitivity / sigma = mu at delta,
  from Balle & Wang (ICML 2018, Theorem 8): the mechanism is (eps, delta)-DP iff
  Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu) <= delta."""
  from scipy import optimize, stats  # pylint: disable=import-outside-toplevel

  def excess(eps):
    return (stats.norm.cdf(mu / 2 - eps / mu) -
            math.exp(eps) * stats.norm.cdf(-mu / 2 - eps / mu) - delta)

  return optimize.brentq(excess, 0.0, 100.0, xtol=1e-12)


@pytest.mark.parametrize("z", [0.8, 1.378, 3.0])
def test_one_round_with_everyone_sampled_is_the_exact_gaussian_mechanism(z):
  """Central noise N(0, (zC)^2) on the sum, every client in the one round: replacing a
  client moves the sum by up to 2C, so this is the Gaussian mechanism with
  sensitivity / sigma = 2 / z, whose exact (eps, delta) curve is Balle & Wang's closed
  form. The PLD epsilon must equal it (PLD is tight for one Gaussian), the RDP epsilon
  must not be below it (RDP's conversion is an upper bound) and not far above."""
  cfg = PrivacyConfig(enabled=True, clip=0.7, noise="central", noise_multiplier=z)
  mech = make_mechanism(cfg, num_clients=20, cohort=20, rounds=1, size=D)
  exact = _gaussian_exact_epsilon(2.0 / z, 1e-5)
  assert accounting.epsilon_pld(mech, 1) == pytest.approx(exact, rel=2e-3)
  rdp_eps = accounting.epsilon(mech, 1)
  assert exact <= rdp_eps <= 1.35 * exact
  # A convention off by the replace-one factor 2 (z instead of z/2) is far off:
  assert _gaussian_exact_epsilon(1.0 / z, 1e-5) < 0.6 * exact


def test_the_abadi_et_al_moments_accountant_figure():
  """Abadi et al. (CCS 2016, section 3.1): Poisson sampling q = 0.01, sigma = 4 (noise
  std over the add/remove sensitivity), T = 10,000 steps, delta = 1e-5: epsilon about
  1.26 with the moments accountant. RDP is the moments accountant with a tighter
  conversion, so it must land at or a little below 1.26; PLD, tighter still, below.
  fedpriv's PLD number is exactly this computation for a run with m / N = 0.01 and
  z' = z / 2 = 4, i.e. z = 8."""
  acc = rdp.RdpAccountant()
  acc.compose(dpa.SelfComposedDpEvent(
      dpa.PoissonSampledDpEvent(0.01, dpa.GaussianDpEvent(4.0)), 10_000))
  eps_rdp = acc.get_epsilon(1e-5)
  assert 1.0 < eps_rdp <= 1.26 * 1.01
  cfg = PrivacyConfig(enabled=True, clip=1.0, noise="central", noise_multiplier=8.0)
  mech = make_mechanism(cfg, num_clients=10_000, cohort=100, rounds=10_000, size=D)
  eps_pld = accounting.epsilon_pld(mech, 10_000)
  assert 0.7 * eps_rdp < eps_pld <= eps_rdp


def test_clients_colluding_with_the_server_remove_their_noise_shares():
  """c colluders subtract their own discrete Gaussian shares: (n - c) shares of the same
  size remain, and the accountant's epsilon is the one for exactly those shares (the
  DDG bound with n - c shares of the unchanged size s), growing with c. Central noise
  is unaffected."""
  cfg = PrivacyConfig(enabled=True, clip=1.0, bits=12, noise="distributed",
                      noise_multiplier=1.2, secagg=True)
  mech = make_mechanism(cfg, num_clients=N, cohort=M, rounds=T, size=D)
  n, s = mech.survivors, mech.client_sigma
  assert mech.with_colluders(0) is mech
  previous = accounting.epsilon(mech, T)
  for c in (1, 25):
    weaker = mech.with_colluders(c)
    assert weaker.client_sigma * math.sqrt(n) == pytest.approx(s * math.sqrt(n - c))
    direct = 1.0 / accounting.ddg_epsilon(2 * mech.level_bound,
                                          2 * mech.level_bound * math.sqrt(mech.keep),
                                          n - c, s, mech.keep)
    assert accounting.accountant_noise_multiplier(weaker) == pytest.approx(direct, rel=1e-9)
    eps = accounting.epsilon(weaker, T)
    assert eps > previous
    previous = eps
  with pytest.raises(ValueError, match="no honest share"):
    mech.with_colluders(n)
  assert central().with_colluders(5) == central()
