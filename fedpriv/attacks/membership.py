"""Membership inference against a trained model: scores, ROC, AUC, TPR at low FPR.

The loss-threshold attack (Yeom, Giacomelli, Fredrikson & Jha 2018) calls an example a
member when the model's loss on it is low: its score is the negated loss. An attack is
judged by its ROC curve over every threshold (members are positives), its AUC, and its
true-positive rate at a small false-positive rate (Carlini et al. 2022: 0.1%), which is
what matters for an attacker that must be confident.

Scores are computed under `jit`; the ROC is host-side numpy (sorting and counting).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from fedpriv.models.registry import Task


def _batched(a: np.ndarray, batch_size: int) -> np.ndarray:
  n = len(a)
  nb = -(-n // batch_size)
  pad = nb * batch_size - n
  if pad:
    a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
  return a.reshape((nb, batch_size) + a.shape[1:])


def output_features(task: Task, params, x, y, batch_size: int = 500) -> np.ndarray:
  """Per-example `[N, 4]`: loss, probability of the true label, entropy of the
  prediction, and whether it is correct (for classification tasks)."""
  eval_task = task.for_eval()
  n = len(x)

  @jax.jit
  def run(params, xb, yb):
    def one(batch):
      bx, by = batch
      logits = eval_task.apply(params, bx).astype(jnp.float32)
      logp = jax.nn.log_softmax(logits)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, by)
      p_true = jnp.exp(jnp.take_along_axis(logp, by[:, None], axis=1)[:, 0])
      entropy = -(jnp.exp(logp) * logp).sum(-1)
      correct = (jnp.argmax(logits, -1) == by).astype(jnp.float32)
      return jnp.stack([loss, p_true, entropy, correct], axis=-1)
    return lax.map(one, (xb, yb))

  out = run(params, jnp.asarray(_batched(np.asarray(x), batch_size)),
            jnp.asarray(_batched(np.asarray(y, np.int32), batch_size)))
  return np.asarray(out).reshape(-1, 4)[:n]


def example_losses(task: Task, params, x, y, batch_size: int = 500) -> np.ndarray:
  """Per-example cross-entropy `[N]`."""
  return output_features(task, params, x, y, batch_size)[:, 0]


class Roc(NamedTuple):
  """An ROC curve, one point per distinct threshold, from (0, 0) to (1, 1).

  tp, fp: `[P]` int counts of members / non-members scored >= the threshold;
  positives, negatives: how many members / non-members there are.
  """
  tp: np.ndarray
  fp: np.ndarray
  positives: int
  negatives: int

  @property
  def tpr(self) -> np.ndarray:
    return self.tp / self.positives

  @property
  def fpr(self) -> np.ndarray:
    return self.fp / self.negatives


def roc(member_scores, nonmember_scores) -> Roc:
  """The ROC of "member if score >= t" over all thresholds t (ties move together)."""
  pos = np.asarray(member_scores, np.float64).ravel()
  neg = np.asarray(nonmember_scores, np.float64).ravel()
  if not len(pos) or not len(neg):
    raise ValueError("need at least one member and one non-member score")
  if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
    raise ValueError("scores must be finite")
  scores = np.concatenate([pos, neg])
  is_member = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
  order = np.argsort(-scores, kind="stable")
  scores, is_member = scores[order], is_member[order]
  tp = np.cumsum(is_member)
  fp = np.cumsum(1 - is_member)
  last_of_tie = np.r_[scores[1:] != scores[:-1], True]
  tp = np.r_[0, tp[last_of_tie]]
  fp = np.r_[0, fp[last_of_tie]]
  return Roc(tp, fp, len(pos), len(neg))


def auc(curve: Roc) -> float:
  """Area under the ROC (trapezoids: ties count one half, as in Mann-Whitney U)."""
  return float(np.trapezoid(curve.tpr, curve.fpr))


def tpr_at_fpr(curve: Roc, max_fpr: float) -> float:
  """The highest TPR among thresholds whose FPR is at most `max_fpr`."""
  ok = curve.fpr <= max_fpr + 1e-12
  return float(curve.tpr[ok].max())


def summarize(curve: Roc, fprs=(0.001, 0.01)) -> dict:
  out = {"auc": auc(curve), "members": curve.positives, "nonmembers": curve.negatives}
  for f in fprs:
    out[f"tpr_at_{f * 100:g}%fpr"] = tpr_at_fpr(curve, f)
  return out


class LogisticAttack(NamedTuple):
  """A logistic regression on standardised features: score = w . (f - mean) / std + b."""
  mean: np.ndarray
  std: np.ndarray
  w: np.ndarray
  b: float

  def score(self, features) -> np.ndarray:
    z = (np.asarray(features, np.float64) - self.mean) / self.std
    return z @ self.w + self.b


def fit_logistic(member_features, nonmember_features, steps: int = 500,
                 learning_rate: float = 0.05, l2: float = 1e-4) -> LogisticAttack:
  """Trains the shadow-model attack's classifier (Shokri et al. 2017, one model for all
  classes): full-batch Adam on the balanced logistic loss, members labelled 1."""
  f = np.concatenate([member_features, nonmember_features]).astype(np.float64)
  target = np.r_[np.ones(len(member_features)), np.zeros(len(nonmember_features))]
  weight = np.where(target > 0, 0.5 / len(member_features), 0.5 / len(nonmember_features))
  mean, std = f.mean(0), f.std(0) + 1e-8
  z = jnp.asarray((f - mean) / std, jnp.float32)
  t = jnp.asarray(target, jnp.float32)
  wt = jnp.asarray(weight, jnp.float32)
  opt = optax.adam(learning_rate)

  def loss_fn(p):
    logits = z @ p["w"] + p["b"]
    return (wt * optax.sigmoid_binary_cross_entropy(logits, t)).sum() + l2 * jnp.sum(
        p["w"] ** 2)

  @jax.jit
  def train(p):
    def step(carry, _):
      p, s = carry
      g = jax.grad(loss_fn)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (p, _), _ = lax.scan(step, (p, opt.init(p)), None, length=steps)
    return p

  p = train({"w": jnp.zeros((z.shape[1],), jnp.float32), "b": jnp.zeros((), jnp.float32)})
  return LogisticAttack(mean, std, np.asarray(p["w"], np.float64), float(p["b"]))
