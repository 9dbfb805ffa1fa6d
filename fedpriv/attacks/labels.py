"""Which labels a client trained on, read from the last layer of its update.

With softmax cross-entropy, the loss gradient with respect to the output layer's bias
is the batch mean of `softmax(logits) - onehot(label)`: for one example its only
negative entry is the true label (Zhao, Mopuri & Bilen 2020, iDLG). The weight gradient
of class c is the same factor times the (non-negative, after ReLU) features, so the
sign of each class's column tells the same story when the bias is not observed. For a
batch, classes present in it are (usually) the negative entries, the more examples the
more negative (Wainakh et al. 2022); with more examples than negative entries the
extra slots go to the most negative classes.

A client's update is a descent step, `trained - start ~ -lr * gradient` (summed over
local steps), so the gradient's sign is the update's sign flipped. This is host-side
numpy: a decision made once per attack, not part of any traced computation.
"""
from __future__ import annotations

import numpy as np


def class_scores(head_kernel_update, head_bias_update=None, kernel_support=None,
                 bias_support=None) -> np.ndarray:
  """Per-class evidence of presence: the negated-update's bias entries, or (when the
  bias is not fully observed) the mean of each class's observed weight column.

  Args:
    head_kernel_update: `[features, classes]` update of the output layer's kernel.
    head_bias_update: `[classes]` update of its bias, or None.
    kernel_support, bias_support: 0/1 arrays of the same shapes, 1 where the attacker
      observed the coordinate (None: everything observed).

  Returns:
    `[classes]` scores; negative means "present", more negative means "more examples".
  """
  grad_w = -np.asarray(head_kernel_update, np.float64)
  if head_bias_update is not None:
    grad_b = -np.asarray(head_bias_update, np.float64)
    if bias_support is None or np.all(np.asarray(bias_support) > 0):
      return grad_b
  seen = np.ones_like(grad_w) if kernel_support is None else np.asarray(kernel_support,
                                                                         np.float64)
  return (grad_w * seen).sum(0) / np.maximum(seen.sum(0), 1.0)


def recover_labels(scores, count: int) -> np.ndarray:
  """`count` labels from per-class scores (see `class_scores`).

  The negative classes, most negative first, each once; if there are more slots than
  negative classes, each further slot goes to the class with the largest remaining
  share `-score / (slots it already has + 1)` (a D'Hondt apportionment of the negative
  mass); if no entry is negative, the lowest scores are used.

  Returns:
    `[count]` int32 labels, sorted.
  """
  scores = np.asarray(scores, np.float64)
  order = np.argsort(scores, kind="stable")
  negative = [int(c) for c in order if scores[c] < 0]
  if not negative:
    negative = [int(order[0])]
  labels = negative[:count]
  slots = {c: 1 for c in labels}
  while len(labels) < count:
    best = max(slots, key=lambda c: -scores[c] / (slots[c] + 1))
    slots[best] += 1
    labels.append(best)
  return np.sort(np.asarray(labels, np.int32))


def label_accuracy(recovered, true) -> float:
  """Fraction of the true labels matched by the recovered multiset (order ignored)."""
  rec = np.bincount(np.asarray(recovered), minlength=256)
  tru = np.bincount(np.asarray(true), minlength=256)
  return float(np.minimum(rec, tru).sum() / max(len(np.asarray(true)), 1))
