"""Empirical privacy audit: a measured lower bound on epsilon for the update mechanism.

The accountant (`accounting.py`) says what epsilon the mechanism *should* have; this
module measures what the code that adds the noise *does* have, so that a bug in the
noise path (a wrong standard deviation, a missing stage, noise added before the clip)
shows up as a measured lower bound above the accountant's number.

The game (one release, the canary always in the cohort, REPLACE_ONE neighbours):
a cohort of `n` clients runs the real `PrivateUplink.encode` (mask, clip, quantize,
noise, and secure aggregation's masks when it is on) and the server's real `decode`,
with fresh randomness every trial. Client 0, the canary, sends an update far along a
fixed unit direction u, +u in world 1 and -u in world 0, so that after the clip the two
worlds differ by the largest distance the mechanism allows (2C); the other n-1 clients
send fixed updates drawn once. The attacker sees the decoded sum and scores it by its
inner product with u, then guesses "world 1" when the score is above a threshold.

Any (epsilon, delta)-DP release obeys TPR <= e^eps FPR + delta (and the same with the
worlds swapped), so a test with Clopper-Pearson bounds TPR_lo and FPR_hi gives, with
confidence 1 - alpha, eps >= log((TPR_lo - delta) / FPR_hi). Half of the trials pick
the threshold, the other half evaluate it, so the choice does not inflate the bound.
This is the classic many-trials audit (Jagielski, Ullman & Oprea 2020; Nasr et al.
2021) rather than Steinke, Nasr & Jagielski's one-run audit: on a simulator one
release costs microseconds, so thousands of trials are cheap and the bound is tighter.

Power: with n evaluation releases per world, the largest bound the test can ever
report (every guess right) is log(((alpha/2)^(1/n) - delta) / (1 - (alpha/2)^(1/n))),
about log(n / ln(2/alpha)): 6.29 for n = 2,000 at 95%. An audit whose largest bound
does not exceed the claim cannot detect a violation, whatever the code does, so
`audit` refuses it (`NoPowerError`) and `trials_for_power` says how many it needs.

What it is compared with: `claimed_epsilon`, the accountant's epsilon for exactly this
game, one release without sampling, computed from the same `Mechanism` object that
the uplink takes its noise from. (A run's epsilon after sampling and T rounds is a
different number; a correct mechanism's audit bound must stay below the one-release
epsilon, which is the strongest statement a single-release audit can test.)
"""
from __future__ import annotations

import dataclasses
import math

import dp_accounting as dpa
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy import stats

from fedpriv import keys as keylib
from fedpriv.fedavg import ClientResult, Cohort
from fedpriv.privacy import accounting


@dataclasses.dataclass(frozen=True)
class AuditResult:
  """Outcome of `audit`.

  Attributes:
    epsilon_lower_bound: measured lower bound on epsilon (confidence 1 - alpha; 0 when
      the test cannot tell the worlds apart).
    claimed_epsilon: the accountant's epsilon for the same one-release game.
    delta: the delta both are stated at.
    trials: releases per world (half choose the threshold, half evaluate it).
    tpr, fpr: the evaluation half's rates at the chosen threshold and direction.
    alpha: one minus the confidence of the lower bound.
    max_measurable: the largest bound these trials can report (`max_measurable_epsilon`).
  """
  epsilon_lower_bound: float
  claimed_epsilon: float
  delta: float
  trials: int
  tpr: float
  fpr: float
  alpha: float
  max_measurable: float = math.inf

  @property
  def power(self) -> bool:
    """True when the audit could measure a bound above the claim at all."""
    return self.max_measurable > self.claimed_epsilon

  @property
  def consistent(self) -> bool:
    """True when the measurement does not contradict the accountant."""
    return self.epsilon_lower_bound <= self.claimed_epsilon

  def as_dict(self) -> dict:
    return {**dataclasses.asdict(self), "consistent": self.consistent, "power": self.power}


class NoPowerError(ValueError):
  """The trials cannot measure a bound above the claim: the audit could never fail."""


def evaluation_trials(trials: int) -> int:
  """Releases per world that evaluate the threshold (the rest choose it)."""
  return trials - trials // 2


def max_measurable_epsilon(trials: int, alpha: float = 0.05, delta: float = 0.0) -> float:
  """The largest lower bound `epsilon_from_scores` can give with `trials` per world:
  every evaluation release guessed right (Clopper-Pearson at alpha/2 on each rate)."""
  n = evaluation_trials(trials)
  tpr_lo = (alpha / 2) ** (1.0 / n)
  fpr_hi = 1.0 - tpr_lo
  if tpr_lo <= delta:
    return 0.0
  return math.log((tpr_lo - delta) / fpr_hi)


def trials_for_power(claim: float, alpha: float = 0.05, delta: float = 0.0,
                     margin: float = 1.0) -> int:
  """The fewest trials per world (even) whose largest measurable bound is at least
  `claim + margin`."""
  if not math.isfinite(claim):
    raise ValueError(f"claim must be finite, got {claim}")
  target = max(claim, 0.0) + margin
  hi = 20
  while max_measurable_epsilon(hi, alpha, delta) < target:
    hi *= 2
    if hi > 2 ** 40:
      raise ValueError(f"no trial count measures epsilon {target} at delta {delta}")
  lo = hi // 2
  while hi - lo > 2:
    mid = (lo + hi) // 2
    if max_measurable_epsilon(mid, alpha, delta) >= target:
      hi = mid
    else:
      lo = mid
  return hi + hi % 2


def claimed_epsilon(mech, delta: float | None = None) -> float:
  """The accountant's epsilon for one release of `mech` with the canary always present.

  The game's worlds differ by replacing the canary's update (+u vs -u), so the claim is
  the replace-one one, also for a mechanism accounted add/remove (Poisson sampling).
  """
  if getattr(mech, "poisson", False):
    mech = dataclasses.replace(mech, sampling="fixed")
  z = accounting.accountant_noise_multiplier(mech)
  if z <= 0:
    return math.inf
  acc = accounting.rdp_accountant(mech)
  acc.compose(dpa.GaussianDpEvent(z))
  return float(acc.get_epsilon(mech.config.delta if delta is None else delta))


def _clopper_pearson(successes: np.ndarray, n: int, alpha: float):
  """One-sided (lower, upper) bounds, each holding with probability 1 - alpha."""
  s = np.asarray(successes, dtype=np.float64)
  lo = np.where(s > 0, stats.beta.ppf(alpha, s, n - s + 1), 0.0)
  hi = np.where(s < n, stats.beta.ppf(1 - alpha, s + 1, n - s), 1.0)
  return lo, hi


def epsilon_from_scores(scores_1: np.ndarray, scores_0: np.ndarray, delta: float,
                        alpha: float = 0.05, num_thresholds: int = 256):
  """Lower bound on epsilon from scores of the two worlds (see the module docstring).

  Returns:
    (epsilon lower bound, tpr, fpr) on the evaluation half.
  """
  s1, s0 = np.asarray(scores_1, np.float64), np.asarray(scores_0, np.float64)
  if s1.shape != s0.shape or s1.ndim != 1 or s1.size < 20:
    raise ValueError("need two 1-d score arrays of the same length, at least 20 each")
  half = s1.size // 2
  sel1, ev1, sel0, ev0 = s1[:half], s1[half:], s0[:half], s0[half:]
  ts = np.quantile(np.concatenate([sel1, sel0]), np.linspace(0, 1, num_thresholds))

  def bound(a1, a0, t, sign):
    # sign +1: guess world 1 when score > t; -1: guess world 0 when score <= t
    # (the same test with the worlds' roles swapped).
    n = a1.size
    if sign > 0:
      hits, false = (a1[:, None] > t).sum(0), (a0[:, None] > t).sum(0)
    else:
      hits, false = (a0[:, None] <= t).sum(0), (a1[:, None] <= t).sum(0)
    tpr_lo, _ = _clopper_pearson(hits, n, alpha / 2)
    _, fpr_hi = _clopper_pearson(false, n, alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
      eps = np.log(np.maximum(tpr_lo - delta, 0.0) / fpr_hi)
    return np.where(np.isfinite(eps), eps, -np.inf), hits / n, false / n

  best = (-np.inf, 0, 1)
  for sign in (+1, -1):
    eps_sel, _, _ = bound(sel1, sel0, ts, sign)
    i = int(np.argmax(eps_sel))
    t = ts[i:i + 1]
    eps_ev, tpr, fpr = bound(ev1, ev0, t, sign)
    if eps_ev[0] > best[0]:
      best = (float(eps_ev[0]), float(tpr[0]), float(fpr[0]))
  eps, tpr, fpr = best
  return max(eps, 0.0), tpr, fpr


def release_scores(uplink, params, *, cohort: int, trials: int, seed: int,
                   batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Scores <decoded sum, u> of `trials` releases in each world.

  Runs `uplink.encode` for every client and `uplink.decode` on their sum, exactly as a
  FedAvg round does (secure aggregation's key agreement once, via `prepare_round`, and
  fresh privatizer and server-noise keys every trial).
  """
  mech = uplink.mechanism
  flat0, unravel = ravel_pytree(params)
  d = flat0.shape[0]
  rng = np.random.default_rng(seed)
  base = keylib.base_key(seed)
  rkey = keylib.round_key(base, 1)
  round_ctx = uplink.round_context(params, keylib.server_key(rkey, keylib.UPLINK_PUBLIC),
                                   uplink.init_state())
  kept = uplink.kept_coordinates(round_ctx)
  kept = np.arange(d) if kept is None else np.asarray(kept)
  u = np.zeros(d, np.float32)
  direction = rng.normal(size=kept.size)
  u[kept] = direction / np.linalg.norm(direction)
  big = 100.0 * mech.config.clip * max(mech.mask_scale, 1.0)  # far past the clip
  others = rng.normal(size=(cohort - 1, d)).astype(np.float32)
  others *= 0.5 * mech.config.clip / np.linalg.norm(others, axis=1, keepdims=True)
  ids = jnp.arange(cohort, dtype=jnp.int32)
  # The round's host step (secure aggregation's key agreement; nothing without it).
  prepared, server_ctx, _ = uplink.prepare_round(
      Cohort(ids, jnp.ones((cohort,), bool), jnp.zeros((cohort,)), None), 1)
  client_ctx = prepared.context
  canary = 0
  if client_ctx is not None:  # the canary is a client whose message arrives
    canary = int(np.flatnonzero(np.asarray(client_ctx.survived))[0])
  deltas = np.insert(others, canary, 0.0, axis=0)
  u_j, deltas_j = jnp.asarray(u), jnp.asarray(deltas)
  zero = jnp.zeros_like(flat0)

  def one_release(key, world):
    sign = jnp.where(world == 1, 1.0, -1.0)
    ds = deltas_j.at[canary].set(sign * big * u_j)

    def encode(i, delta, ckey):
      result = ClientResult(unravel(zero), unravel(delta), None, jnp.ones(()))
      ctx = None if client_ctx is None else jax.tree.map(lambda c: c[i], client_ctx)
      return uplink.encode(result, ckey, (round_ctx, ctx))

    ckeys = jax.random.split(jax.random.fold_in(key, 0), cohort)
    messages = jax.vmap(encode)(ids, ds, ckeys)
    total = jax.tree.map(lambda m: m.sum(0), messages)
    mean = uplink.decode(total, params, jax.random.fold_in(key, 1), (round_ctx, server_ctx))
    flat, _ = ravel_pytree(mean)
    return jnp.dot(flat, u_j)

  if batch is None:  # releases per jitted call: about 2^27 floats of client vectors
    batch = int(max(1, min(512, 2 ** 27 // (cohort * d))))
  run = jax.jit(jax.vmap(one_release))
  out = {}
  for world in (1, 0):
    keys = jax.random.split(jax.random.fold_in(base, 100 + world), trials)
    chunks = [np.asarray(run(keys[i:i + batch], jnp.full((keys[i:i + batch].shape[0],), world)))
              for i in range(0, trials, batch)]
    out[world] = np.concatenate(chunks)
  return out[1], out[0]


def audit(uplink, params, *, cohort: int | None = None, trials: int = 20_000, seed: int = 0,
          alpha: float = 0.05, delta: float | None = None,
          require_power: bool = True) -> AuditResult:
  """Measures a lower bound on the epsilon of `uplink`'s release (see module docstring).

  Args:
    uplink: a `PrivateUplink` (its `mechanism` is what the accountant reads).
    params: a params pytree of the model the uplink was built for (values unused).
    cohort: clients in the release (default: the mechanism's cohort).
    trials: releases per world.
    seed: randomness of the game (directions, other clients, keys).
    alpha: the bound holds with probability at least 1 - alpha.
    delta: default: the mechanism's delta.
    require_power: refuse (`NoPowerError`) trials too few to measure a bound above the
      claim; False runs anyway (the result's `power` is then False).
  """
  mech = uplink.mechanism
  if not mech.noisy:
    raise ValueError("the mechanism adds no noise: its epsilon is infinite, nothing to audit")
  cohort = mech.cohort if cohort is None else cohort
  if cohort < 1 or trials < 20:
    raise ValueError(f"need cohort >= 1 and trials >= 20, got {cohort} and {trials}")
  delta = mech.config.delta if delta is None else delta
  claim = claimed_epsilon(mech, delta)
  top = max_measurable_epsilon(trials, alpha, delta)
  if require_power and not top > claim:
    raise NoPowerError(f"no power: {trials} releases per world can measure at most "
                       f"epsilon {top:.2f}, not above the claim {claim:.2f}; use at least "
                       f"{trials_for_power(claim, alpha, delta)}")
  s1, s0 = release_scores(uplink, params, cohort=cohort, trials=trials, seed=seed)
  eps, tpr, fpr = epsilon_from_scores(s1, s0, delta, alpha)
  return AuditResult(eps, claim, delta, trials, tpr, fpr, alpha, top)
