"""Does a measured ROC respect a differential-privacy guarantee?

An (epsilon, delta)-DP training algorithm bounds every membership test (Kairouz, Oh &
Viswanath 2015; used for auditing by Jagielski, Ullman & Oprea 2020):

    TPR <= e^eps * FPR + delta    and    1 - FPR <= e^eps * (1 - TPR) + delta.

Measured rates are estimates from finitely many members and non-members, so a point
is only called a violation when it holds with confidence: the Clopper-Pearson lower
bound of the TPR exceeds e^eps times the upper bound of the FPR plus delta (and
likewise for the second inequality), with a Bonferroni correction over every
interval the check uses, so the chance of a false alarm over the whole curve is at
most `alpha`. The same intervals give a lower bound on the epsilon the measured
attack demonstrates (`epsilon_lower_bound`), which must stay below the accountant's.

Membership is per example, the guarantee per client (client-level DP): replacing one
example replaces the client that holds it, so the client-level bound applies to it.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from fedpriv.attacks.membership import Roc


def clopper_pearson(k, n, alpha: float) -> tuple[np.ndarray, np.ndarray]:
  """Two-sided exact binomial interval of confidence 1 - alpha for k successes in n."""
  k = np.asarray(k, np.float64)
  lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
  hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
  return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def _log_ratio(num, den):
  with np.errstate(divide="ignore", invalid="ignore"):
    r = np.where(num > 0, np.log(np.maximum(num, 1e-300) / np.maximum(den, 1e-300)), -np.inf)
  return r


def check_bound(curve: Roc, epsilon: float, delta: float, alpha: float = 0.05) -> dict:
  """Checks both DP inequalities at every point of `curve`.

  Returns:
    a flat dict: `bound_points` (ROC points checked), `bound_violations_point`
    (points whose point estimates break an inequality), `bound_violations_confident`
    (points that break one even at the confident ends of the intervals),
    `bound_holds` (no confident violation), `bound_max_excess` (largest
    TPR - e^eps FPR - delta over the point estimates), and `epsilon_lower_bound`
    (the largest epsilon the intervals prove, 0 if none).
  """
  tpr, fpr = curve.tpr, curve.fpr
  points = len(tpr)
  a = alpha / (4 * points)  # Bonferroni: four intervals per point
  tpr_lo, tpr_hi = clopper_pearson(curve.tp, curve.positives, 2 * a)
  fpr_lo, fpr_hi = clopper_pearson(curve.fp, curve.negatives, 2 * a)
  e = math.exp(epsilon) if epsilon < 700 else math.inf
  with np.errstate(invalid="ignore"):
    point_bad = (tpr > e * fpr + delta) | (1 - fpr > e * (1 - tpr) + delta)
    sure_bad = (tpr_lo > e * fpr_hi + delta) | (1 - fpr_hi > e * (1 - tpr_lo) + delta)
    excess = np.max(tpr - np.minimum(e * fpr + delta, 1.0))
  eps_lb = max(0.0, float(np.max(_log_ratio(tpr_lo - delta, fpr_hi))),
               float(np.max(_log_ratio((1 - fpr_hi) - delta, 1 - tpr_lo))))
  return {"bound_points": int(points), "bound_violations_point": int(point_bad.sum()),
          "bound_violations_confident": int(sure_bad.sum()),
          "bound_holds": bool(not sure_bad.any()), "bound_max_excess": float(excess),
          "epsilon_lower_bound": eps_lb, "bound_alpha": alpha}
