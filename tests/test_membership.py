"""Membership-inference metrics and the DP-bound audit."""
import math

import numpy as np
import pytest
from scipy import stats

from fedpriv.attacks import dp_audit, membership


def test_auc_equals_the_mann_whitney_statistic():
  rng = np.random.default_rng(0)
  pos = np.round(rng.normal(0.5, 1, 300), 1)  # rounding makes ties
  neg = np.round(rng.normal(0.0, 1, 500), 1)
  curve = membership.roc(pos, neg)
  u = stats.mannwhitneyu(pos, neg).statistic
  assert membership.auc(curve) == pytest.approx(u / (len(pos) * len(neg)), abs=1e-9)
  assert curve.tpr[0] == 0 and curve.fpr[0] == 0 and curve.tpr[-1] == 1 and curve.fpr[-1] == 1
  assert np.all(np.diff(curve.tp) >= 0) and np.all(np.diff(curve.fp) >= 0)


def test_roc_points_by_hand():
  curve = membership.roc([3.0, 2.0, 1.0], [2.5, 0.0])
  np.testing.assert_array_equal(curve.tp, [0, 1, 1, 2, 3, 3])
  np.testing.assert_array_equal(curve.fp, [0, 0, 1, 1, 1, 2])
  assert membership.tpr_at_fpr(curve, 0.0) == pytest.approx(1 / 3)
  assert membership.tpr_at_fpr(curve, 0.5) == 1.0
  assert membership.auc(membership.roc([2.0, 3.0], [0.0, 1.0])) == 1.0
  assert membership.auc(membership.roc([1.0], [1.0])) == 0.5


def test_clopper_pearson_matches_scipy_exact_interval():
  for k, n in [(0, 10), (3, 10), (10, 10), (47, 200)]:
    lo, hi = dp_audit.clopper_pearson(np.array([k]), n, 0.05)
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    assert lo[0] == pytest.approx(ci.low, abs=1e-9)
    assert hi[0] == pytest.approx(ci.high, abs=1e-9)


def randomized_response(eps, n, seed):
  """Scores of an eps-DP membership test: say "member" w.p. e^eps / (1 + e^eps) for
  members and 1 / (1 + e^eps) for non-members (the tightest eps-DP test)."""
  rng = np.random.default_rng(seed)
  p = math.exp(eps) / (1 + math.exp(eps))
  return (rng.uniform(size=n) < p).astype(float), (rng.uniform(size=n) < 1 - p).astype(float)


def test_bound_holds_at_the_true_epsilon_and_is_violated_below_it():
  pos, neg = randomized_response(1.0, 20000, 1)
  curve = membership.roc(pos, neg)
  at_truth = dp_audit.check_bound(curve, 1.0, 0.0)
  assert at_truth["bound_holds"]
  assert 0.8 < at_truth["epsilon_lower_bound"] <= 1.0
  below = dp_audit.check_bound(curve, 0.6, 0.0)
  assert not below["bound_holds"] and below["bound_violations_confident"] >= 1


def test_small_samples_need_confidence_before_a_violation():
  perfect = membership.roc(np.ones(10), np.zeros(10))
  small = dp_audit.check_bound(perfect, 1.0, 1e-5)
  assert small["bound_violations_point"] >= 1  # TPR 1 at FPR 0, as measured
  assert small["bound_holds"]                  # ...but 10 + 10 examples prove nothing
  big = dp_audit.check_bound(membership.roc(np.ones(2000), np.zeros(2000)), 1.0, 1e-5)
  assert not big["bound_holds"]


def test_logistic_attack_separates_shifted_features():
  rng = np.random.default_rng(2)
  inside = rng.normal(size=(400, 3)) + np.array([1.0, 0.0, 0.0])
  outside = rng.normal(size=(400, 3))
  attack = membership.fit_logistic(inside, outside)
  assert attack.w[0] > 0 and abs(attack.w[0]) > 3 * max(abs(attack.w[1]), abs(attack.w[2]))
  curve = membership.roc(attack.score(inside), attack.score(outside))
  assert membership.auc(curve) > 0.7
