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

Two threat models, two kinds of epsilon (`claims`)
-------------------------------------------------
* Against observers of the released models who do not learn the cohorts: the epsilon
  above, with amplification by sampling (which needs the sample to be secret: a private
  run draws its cohorts from its secret key, `FedAvg.secret_cohorts`).
* Against the server: it draws the cohort, runs secure aggregation with exactly those
  clients and so knows who took part. Sampling amplifies nothing against it: a client
  that took part k times is protected by k compositions of the Gaussian (no sampling
  event), for k = 1 and for the largest k of any client in the run.
Every claim names its neighbouring relation, its sampling scheme, its accountant and
its delta, and each is computed by both RDP and PLD.

Poisson sampling (`Config.client_sampling = "poisson"`)
--------------------------------------------------------
Each client joins a round independently with probability q = clients_per_round / N;
the relation is add/remove (N is not public), so the sensitivity of the sum is B and
z' = sigma / B; the mean divides by the expected count, never the drawn one. The draw is
padded to a fixed capacity; if more than `capacity` clients are drawn, a uniformly random
`capacity` of them are kept. That truncation differs from Poisson sampling only on the
overflow event, whose probability p_over = P(Binomial(N + 1, q) > capacity) per round is
computed exactly, so the run is (epsilon, delta + (1 + e^epsilon) T p_over)-DP for any
(epsilon, delta) of the untruncated mechanism (a coupling that differs with probability
at most T p_over); each observer claim reports that delta.

Distributed noise with Poisson sampling: the number of shares in a round's sum varies.
Each share is sized for m_min shares (`Mechanism.min_cohort`), the largest count such
that fewer than m_min of a client's N - 1 others are drawn with probability
p_under <= OVERFLOW_TARGET / T per round (computed exactly); the client's own share is
not counted (an adversary that knew it would subtract it). A round with at least m_min
others carries at least the planned noise (more is post-processing), so by the same
coupling the run is (epsilon, delta + (1 + e^epsilon) T (p_over + p_under))-DP. Rounds
with more clients than m_min get proportionally more noise: the price of not letting
the shares depend on the drawn count (which the clients do not know).
"""
from __future__ import annotations

import math

import dp_accounting as dpa
from dp_accounting import mechanism_calibration, pld, rdp
from scipy import stats

from fedpriv.config import OVERFLOW_TARGET

_REPLACE_ONE = dpa.NeighboringRelation.REPLACE_ONE
_ADD_REMOVE = dpa.NeighboringRelation.ADD_OR_REMOVE_ONE

OBSERVER = ("observers of the released models who do not learn the cohorts "
            "(amplification by sampling)")
SERVER = ("the server, which draws the cohorts and so knows who took part (composition "
          "over a client's participations, no amplification)")
SIMULATION_ONLY = ("simulation only: privacy.reproducible_noise derives the noise and "
                   "the cohorts from the seed, which the config records")


def ddg_epsilon(l2: float, l1: float, n: int, sigma: float, dim: int,
                max_shares: int | None = None) -> float:
  """eps of Kairouz, Liu & Steinke's Theorem 1 for a sum of n N_Z(0, sigma^2) shares.

  With `max_shares` (Poisson: the sum holds between n and max_shares shares) tau is
  taken at max_shares, where it is largest, and the variance terms at n, where they
  are: a bound for every count in between."""
  if n < 1 or sigma <= 0:
    return math.inf
  tau = 10.0 * sum(math.exp(-2.0 * math.pi ** 2 * sigma ** 2 * j / (j + 1))
                   for j in range(1, max(n, max_shares or n)))
  a = math.sqrt(l2 ** 2 / (n * sigma ** 2) + 0.5 * tau * dim)
  b = l1 / (math.sqrt(n) * sigma) + tau * dim
  return min(a, b)


def poisson(mech) -> bool:
  return getattr(mech, "sampling", "fixed") == "poisson"


def relation(mech) -> str:
  """The neighbouring relation of every claim about `mech`."""
  return "add/remove" if poisson(mech) else "replace-one"


def sensitivity_factor(mech) -> float:
  """The sum moves by this many per-client bounds between neighbours (2 for
  replace-one, 1 for add/remove)."""
  return 1.0 if poisson(mech) else 2.0


def accountant_noise_multiplier(mech, noise_multiplier: float | None = None) -> float:
  """z' for `dp_accounting` (see the module docstring); 0 means no privacy."""
  z = mech.noise_multiplier if noise_multiplier is None else noise_multiplier
  if not mech.noisy or z <= 0:
    return 0.0
  f = sensitivity_factor(mech)
  if mech.config.noise == "central":
    return z / f
  delta_levels = mech.level_bound
  share = z * delta_levels / math.sqrt(mech.survivors)
  eps = ddg_epsilon(f * delta_levels, f * delta_levels * math.sqrt(mech.dim),
                    mech.survivors, share, mech.dim,
                    max_shares=mech.capacity if poisson(mech) else None)
  return 1.0 / eps


def sampling_rate(mech) -> float:
  return mech.cohort / mech.num_clients


def dp_event(mech, rounds: int, noise_multiplier: float | None = None) -> dpa.DpEvent:
  """The `DpEvent` of `rounds` rounds of this mechanism, as sampled."""
  z = accountant_noise_multiplier(mech, noise_multiplier)
  if z <= 0:
    return dpa.NonPrivateDpEvent()
  if poisson(mech):
    one = dpa.PoissonSampledDpEvent(sampling_rate(mech), dpa.GaussianDpEvent(z))
  else:
    one = dpa.SampledWithoutReplacementDpEvent(
        mech.num_clients, mech.cohort, dpa.GaussianDpEvent(z))
  return dpa.SelfComposedDpEvent(one, rounds)


def rdp_accountant(mech=None) -> rdp.RdpAccountant:
  rel = _ADD_REMOVE if mech is not None and poisson(mech) else _REPLACE_ONE
  return rdp.RdpAccountant(neighboring_relation=rel)


def _delta(mech, delta):
  return mech.config.delta if delta is None else delta


def epsilon(mech, rounds: int, delta: float | None = None) -> float:
  """RDP epsilon against observers after `rounds` rounds at `delta` (default: the
  config's): the headline, and what `target_epsilon` calibrates."""
  if rounds <= 0:
    return 0.0
  acc = rdp_accountant(mech)
  acc.compose(dp_event(mech, rounds))
  return float(acc.get_epsilon(_delta(mech, delta)))


def epsilon_pld(mech, rounds: int, delta: float | None = None) -> float:
  """PLD epsilon against observers, for the same claim as `epsilon`.

  Poisson sampling: the PLD of the very event `epsilon` accounts. Fixed-size sampling
  without replacement under replace-one: `dp_accounting`'s PLD has no such event; the
  pair (q P + (1-q) Q, Q), (P, Q) = (N(2B, sigma^2), N(0, sigma^2)), dominates it (Zhu,
  Dong & Wang, AISTATS 2022), and the PLD accountant's Poisson add/remove event with
  multiplier z' = sigma / (2B) bounds that pair in both directions.
  """
  return _poisson_pld_epsilon(mech, rounds, _ADD_REMOVE, delta)


def _poisson_pld_epsilon(mech, rounds: int, relation, delta: float | None) -> float:
  """PLD epsilon of `rounds` Poisson-sampled Gaussian rounds at z' under `relation`."""
  z = accountant_noise_multiplier(mech)
  if z <= 0:
    return math.inf
  if rounds <= 0:
    return 0.0
  acc = pld.PLDAccountant(neighboring_relation=relation)
  acc.compose(dpa.SelfComposedDpEvent(
      dpa.PoissonSampledDpEvent(sampling_rate(mech), dpa.GaussianDpEvent(z)), rounds))
  return float(acc.get_epsilon(_delta(mech, delta)))


def epsilon_replace_one(mech, rounds: int, delta: float | None = None) -> float:
  """Poisson sampling only: the observers' PLD epsilon under replace-one (a client's
  data swapped for other data, the population unchanged), for readers who compare with
  fixed-size results. The sum moves by up to 2B, but a swapped client is drawn only with
  probability q: the pair is ((1-q) N(0) + q N(B), (1-q) N(0) + q N(-B)), which
  `dp_accounting`'s PLD accountant composes exactly for a `PoissonSampledDpEvent` under
  REPLACE_ONE (tests/test_epsilons.py checks one round against the integral)."""
  if not poisson(mech):
    raise ValueError("epsilon_replace_one is for Poisson sampling; fixed-size sampling "
                     "is accounted under replace-one already")
  return _poisson_pld_epsilon(mech, rounds, _REPLACE_ONE, delta)


def server_epsilon(mech, participations: int, accountant: str = "RDP",
                   delta: float | None = None) -> float:
  """Epsilon against the server for a client that took part `participations` times:
  that many Gaussian releases, composed, without amplification by sampling."""
  z = accountant_noise_multiplier(mech)
  if z <= 0:
    return math.inf
  if participations <= 0:
    return 0.0
  event = dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z), participations)
  if accountant == "RDP":
    acc = rdp_accountant(mech)
  elif accountant == "PLD":
    acc = pld.PLDAccountant(neighboring_relation=_ADD_REMOVE)
  else:
    raise ValueError(f"accountant must be 'RDP' or 'PLD', got {accountant!r}")
  acc.compose(event)
  return float(acc.get_epsilon(_delta(mech, delta)))


def overflow_probability(mech) -> float:
  """Poisson sampling: P(more than `capacity` clients drawn in a round), under the
  larger of two add/remove neighbours (N + 1 clients); 0 for fixed-size sampling."""
  if not poisson(mech):
    return 0.0
  return float(stats.binom.sf(mech.capacity, mech.num_clients + 1, sampling_rate(mech)))


def poisson_floor(num_clients: int, q: float, rounds: int) -> int:
  """The largest m with P(Binomial(N - 1, q) < m) <= OVERFLOW_TARGET / rounds: how many
  of any one client's N - 1 others a round draws, except with that probability."""
  p = OVERFLOW_TARGET / max(rounds, 1)
  m = int(stats.binom.ppf(p, num_clients - 1, q)) + 1
  while m > 0 and stats.binom.cdf(m - 1, num_clients - 1, q) > p:
    m -= 1
  return m


def underflow_probability(mech) -> float:
  """Poisson sampling with distributed noise: P(fewer than `min_cohort` of a client's
  others drawn in a round), when the shares add less noise than planned; 0 otherwise."""
  if not poisson(mech) or mech.config.noise != "distributed":
    return 0.0
  return float(stats.binom.cdf(mech.min_cohort - 1, mech.num_clients - 1,
                               sampling_rate(mech)))


def observer_delta(mech, eps: float, rounds: int, delta: float | None = None) -> float:
  """The delta of an observer claim: the accountant's, plus what truncating Poisson
  draws to the capacity, and (distributed noise) a draw below `min_cohort`, can add
  (module docstring)."""
  d = _delta(mech, delta)
  extra = (overflow_probability(mech) + underflow_probability(mech)) * rounds
  if extra == 0.0 or not math.isfinite(eps):  # an infinite epsilon claims nothing
    return d
  return min(1.0, d + (1.0 + math.exp(min(eps, 700.0))) * extra)


def sampling_label(mech, rounds: int) -> str:
  if poisson(mech):
    return (f"Poisson (each of {mech.num_clients} clients with q = "
            f"{sampling_rate(mech):.6g} per round; draws over {mech.capacity} truncated, "
            f"probability {overflow_probability(mech):.3g} per round; {rounds} rounds)")
  return (f"without replacement, fixed size ({mech.cohort} of {mech.num_clients} per "
          f"round; {rounds} rounds)")


def claims(mech, rounds: int, max_participations: int) -> list[dict]:
  """Every epsilon of a run, each with its threat model and conventions.

  Args:
    mech: the run's `Mechanism` (the object that set the noise).
    rounds: rounds run.
    max_participations: the largest number of rounds any one client took part in.

  Returns:
    dicts with `name`, `threat_model`, `epsilon`, `delta`, `relation`, `sampling`,
    (Poisson runs add `observer_replace_pld`: the observers' claim under replace-one)
    `accountant`, `participations` (server claims) and `valid` ("yes", or "simulation
    only ..." when the noise was derived from the seed).
  """
  valid = SIMULATION_ONLY if mech.config.reproducible_noise else "yes"
  rel = relation(mech)
  out = []
  for acc, fn in (("RDP", epsilon), ("PLD", epsilon_pld)):
    eps = fn(mech, rounds)
    note = ""
    if acc == "PLD" and not poisson(mech):
      note = (" of the dominating pair of sampling without replacement under replace-one "
              "(Zhu, Dong & Wang 2022), as a Poisson add/remove event at z' = sigma/(2B)")
    out.append({"name": f"observer_{acc.lower()}", "threat_model": OBSERVER,
                "epsilon": eps, "delta": observer_delta(mech, eps, rounds),
                "relation": rel, "sampling": sampling_label(mech, rounds),
                "accountant": acc + note, "participations": None, "valid": valid})
  if poisson(mech):
    eps = epsilon_replace_one(mech, rounds)
    out.append({"name": "observer_replace_pld", "threat_model": OBSERVER, "epsilon": eps,
                "delta": observer_delta(mech, eps, rounds), "relation": "replace-one",
                "sampling": sampling_label(mech, rounds), "accountant": "PLD",
                "participations": None, "valid": valid})
  for tag, k in (("one", 1), ("max", max_participations)):
    for acc in ("RDP", "PLD"):
      out.append({"name": f"server_{tag}_{acc.lower()}", "threat_model": SERVER,
                  "epsilon": server_epsilon(mech, k, acc), "delta": _delta(mech, None),
                  "relation": rel, "sampling": "none (the server knows the cohorts)",
                  "accountant": acc, "participations": k, "valid": valid})
  return out


def calibrate_noise_multiplier(mech) -> float:
  """The smallest z (within 1e-4) whose RDP epsilon after all rounds is <= target."""
  from fedpriv.config import ConfigError  # pylint: disable=import-outside-toplevel
  cfg = mech.config
  try:
    z = mechanism_calibration.calibrate_dp_mechanism(
        lambda: rdp_accountant(mech), lambda z: dp_event(mech, mech.rounds, z),
        cfg.target_epsilon,
        cfg.delta, mechanism_calibration.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-4)
  except mechanism_calibration.NoBracketIntervalFoundError:
    raise ConfigError("privacy.target_epsilon", f"no noise multiplier reaches epsilon "
                      f"{cfg.target_epsilon} at delta {cfg.delta}") from None
  z = float(z)
  for _ in range(100):  # calibration is within tol of the optimum: step to the safe side
    acc = rdp_accountant(mech)
    acc.compose(dp_event(mech, mech.rounds, z))
    if acc.get_epsilon(cfg.delta) <= cfg.target_epsilon:
      return z
    z += 1e-4
  raise ConfigError("privacy.target_epsilon", "calibration did not converge")
