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
