"""Client-level differential privacy, accounted with Google's `dp_accounting`.

Everything here is computed from a `Mechanism` (fedpriv/privacy/mechanism.py), the same
object the uplink takes its noise from.

What is accounted, exactly
--------------------------
* Unit of privacy: one client's whole dataset (client-level DP). Neighbouring
  populations differ by *replacing* one client (REPLACE_ONE): the population size N is
  public, as it must be for fixed-size sampling.
* Sampling: each round draws m of the N clients uniformly without replacement, fresh
  every round, for `rounds` rounds; that is
  `SelfComposedDpEvent(SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z')), T)`,
  which `dp_accounting`'s RDP accountant analyses with Wang, Balle & Kasiviswanathan
  (AISTATS 2019). (Dropouts are not counted as extra amplification: the accountant
  sees all m sampled clients.)
* The multiplier z' handed to `dp_accounting`. Each client's contribution to the sum
  has L2 norm <= B (the clip bound, or the conditional-rounding bound Delta after
  quantization). Replacing a client moves the sum by up to 2B. dp_accounting 0.6's
  WOR computation normalises by the L2 sensitivity of the query under REPLACE_ONE
  (its q = 1 case returns alpha / (2 z'^2)), i.e. it expects z' = sigma / (2B), not
  the sigma / B its `GaussianDpEvent` docstring describes (google/differential-privacy
  issue #378). We pass sigma / (2B); `tests/test_accounting.py` pins the library's
  convention so an upgrade that changes it fails loudly.
* Central noise: the server adds N(0, sigma^2), sigma = z B: z' = z / 2, exact.
* Distributed noise: the sum carries n independent discrete Gaussians N_Z(0, s^2)
  (n = clients whose vectors are in the sum, s = their share) on integer codes with
  ||code difference||_2 <= 2 Delta. Kairouz, Liu & Steinke (ICML 2021, Theorem 1)
  give (eps^2/2)-concentrated DP for it, i.e. RDP alpha * eps^2 / 2 at every order,
  with eps = min( sqrt(D2^2/(n s^2) + tau k / 2), D1/(sqrt(n) s) + tau k ),
  tau = 10 sum_{j=1}^{n-1} exp(-2 pi^2 s^2 j/(j+1)), D2 = 2 Delta, D1 = sqrt(k) D2,
  k the dimension. That is the RDP curve of a Gaussian mechanism with
  z' = 1 / eps, which is what we hand to the accountant. tau is below 1e-300 for
  any s >= 4 (ours are in the tens or hundreds of levels), so z' equals
  sqrt(n) s / (2 Delta) to double precision: the sum of discrete Gaussians is
  accounted as the continuous Gaussian of the same variance. The approximation we
  do not bound: the WOR amplification formula in dp_accounting contains a
  Gaussian-specific term (forward differences of the Gaussian's moment function,
  Wang et al.'s Gaussian improvement) besides the general-mechanism bound, and we
  apply it to the discrete mechanism through its RDP curve.
* PLD: `dp_accounting`'s PLD accountant has no fixed-size WOR event. `epsilon_pld`
  is the PLD of the Poisson-subsampled Gaussian with q = m/N and multiplier
  z' = sigma / (2B) under add/remove, which upper-bounds WOR sampling under
  REPLACE_ONE by the dominating pair (q P + (1-q) Q, Q) with (P, Q) = (N(2B, sigma^2),
  N(0, sigma^2)) of Zhu, Dong & Wang (AISTATS 2022). It is reported as a second
  opinion; `epsilon` (RDP, the exact event) is the headline number and the one
  `target_epsilon` calibrates against.
"""
from __future__ import annotations

import math

import dp_accounting as dpa
from dp_accounting import mechanism_calibration, pld, rdp

_REPLACE_ONE = dpa.NeighboringRelation.REPLACE_ONE


def ddg_epsilon(l2: float, l1: float, n: int, sigma: float, dim: int) -> float:
  """eps of Kairouz, Liu & Steinke's Theorem 1 for a sum of n N_Z(0, sigma^2) shares."""
  if n < 1 or sigma <= 0:
    return math.inf
  tau = 10.0 * sum(math.exp(-2.0 * math.pi ** 2 * sigma ** 2 * j / (j + 1))
                   for j in range(1, n))
  a = math.sqrt(l2 ** 2 / (n * sigma ** 2) + 0.5 * tau * dim)
  b = l1 / (math.sqrt(n) * sigma) + tau * dim
  return min(a, b)


def accountant_noise_multiplier(mech, noise_multiplier: float | None = None) -> float:
  """z' for `dp_accounting` (see the module docstring); 0 means no privacy."""
  z = mech.noise_multiplier if noise_multiplier is None else noise_multiplier
  if not mech.noisy or z <= 0:
    return 0.0
  if mech.config.noise == "central":
    return z / 2.0
  delta_levels = mech.level_bound
  share = z * delta_levels / math.sqrt(mech.survivors)
  eps = ddg_epsilon(2.0 * delta_levels, 2.0 * delta_levels * math.sqrt(mech.keep),
                    mech.survivors, share, mech.keep)
  return 1.0 / eps


def dp_event(mech, rounds: int, noise_multiplier: float | None = None) -> dpa.DpEvent:
  """The `DpEvent` of `rounds` rounds of this mechanism."""
  z = accountant_noise_multiplier(mech, noise_multiplier)
  if z <= 0:
    return dpa.NonPrivateDpEvent()
  one = dpa.SampledWithoutReplacementDpEvent(
      mech.num_clients, mech.cohort, dpa.GaussianDpEvent(z))
  return dpa.SelfComposedDpEvent(one, rounds)


def rdp_accountant() -> rdp.RdpAccountant:
  return rdp.RdpAccountant(neighboring_relation=_REPLACE_ONE)


def epsilon(mech, rounds: int, delta: float | None = None) -> float:
  """RDP epsilon after `rounds` rounds at `delta` (default: the config's)."""
  if rounds <= 0:
    return 0.0
  acc = rdp_accountant()
  acc.compose(dp_event(mech, rounds))
  return float(acc.get_epsilon(mech.config.delta if delta is None else delta))


def epsilon_pld(mech, rounds: int, delta: float | None = None) -> float:
  """PLD epsilon (Poisson q = m/N upper bound for WOR, see the module docstring)."""
  z = accountant_noise_multiplier(mech)
  if z <= 0:
    return math.inf
  if rounds <= 0:
    return 0.0
  acc = pld.PLDAccountant(neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE)
  acc.compose(dpa.SelfComposedDpEvent(
      dpa.PoissonSampledDpEvent(mech.cohort / mech.num_clients, dpa.GaussianDpEvent(z)),
      rounds))
  return float(acc.get_epsilon(mech.config.delta if delta is None else delta))


def calibrate_noise_multiplier(mech) -> float:
  """The smallest z (within 1e-4) whose RDP epsilon after all rounds is <= target."""
  from fedpriv.config import ConfigError  # pylint: disable=import-outside-toplevel
  cfg = mech.config
  try:
    z = mechanism_calibration.calibrate_dp_mechanism(
        rdp_accountant, lambda z: dp_event(mech, mech.rounds, z), cfg.target_epsilon,
        cfg.delta, mechanism_calibration.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-4)
  except mechanism_calibration.NoBracketIntervalFoundError:
    raise ConfigError("privacy.target_epsilon", f"no noise multiplier reaches epsilon "
                      f"{cfg.target_epsilon} at delta {cfg.delta}") from None
  z = float(z)
  for _ in range(100):  # calibration is within tol of the optimum: step to the safe side
    acc = rdp_accountant()
    acc.compose(dp_event(mech, mech.rounds, z))
    if acc.get_epsilon(cfg.delta) <= cfg.target_epsilon:
      return z
    z += 1e-4
  raise ConfigError("privacy.target_epsilon", "calibration did not converge")
