"""Evaluating a model on a centralized test set in fixed-size batches (one compile)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fedpriv.data.client_data import EvalData
from fedpriv.models.registry import Task


def batch_eval_data(data: EvalData, batch_size: int) -> EvalData:
  """Pads the test set to whole batches: arrays become `[num_batches, batch, ...]`."""
  n = len(data.mask)
  nb = -(-n // batch_size)
  pad = nb * batch_size - n

  def prep(a):
    a = np.asarray(a)
    a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    return a.reshape((nb, batch_size) + a.shape[1:])

  return EvalData(prep(data.x), prep(data.y), prep(data.mask))


def evaluate(task: Task, params, batched: EvalData) -> dict:
  """Mean loss and accuracy of `params` on a batched test set (see `batch_eval_data`)."""
  task = task.for_eval()

  def one(batch):
    return task.stats(params, *batch)

  loss_sum, correct, count = jax.tree.map(
      lambda s: s.sum(), lax.map(one, tuple(batched)))
  count = jnp.maximum(count, 1.0)
  return {"loss": loss_sum / count, "accuracy": correct / count}
