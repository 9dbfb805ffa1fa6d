"""Server pretraining: the model FedQSN protects must be worth protecting.

The server holds data no client has (`FederatedDataset.server`: a held-out share of
Fashion-MNIST's training set, or whole Shakespeare plays) and trains on it before round 1;
the federation then fine-tunes. Pretraining is one `lax.scan` of optax steps
(`local_train` with the server as the only "client"), keyed by the run's PRETRAIN key, so
the same seed gives the same pretrained model. Because a sweep starts many runs from the
same pretrained model, `Pretrain` can keep it in a cache folder, keyed by a digest of
everything that determines it (server data, initial parameters, recipe).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedpriv import keys as keylib
from fedpriv.data.client_data import EvalData
from fedpriv.evaluate import batch_eval_data, evaluate
from fedpriv.local import local_train
from fedpriv.models.registry import Task
from fedpriv.schedule import client_batches
from fedpriv.fedqsn.units import leaf_names


def pretrain(task: Task, optimizer: optax.GradientTransformation, params, data: EvalData,
             epochs: int, batch_size: int, key: jax.Array, unroll: int = 1):
  """Trains `params` on the server's data for `epochs` passes (shuffled by `key`).

  Returns:
    `(params, mean training loss over all steps)`.
  """
  x, y, mask = (jnp.asarray(a) for a in data)
  idx, valid = client_batches(key, mask, epochs, batch_size)
  trained, (loss_sum, _, count) = local_train(task, optimizer, params, x, y, idx, valid,
                                              unroll=unroll)
  return trained, loss_sum / jnp.maximum(count, 1.0)


def _digest(params, data: EvalData, recipe: dict) -> str:
  h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
  for name, leaf in zip(leaf_names(params), jax.tree.leaves(params)):
    h.update(name.encode())
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  for a in data:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.shape, a.dtype)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:24]


@dataclasses.dataclass
class Pretrain:
  """Driver hook: replaces the initial model by the server-pretrained one.

  Attributes:
    optimizer: optax optimizer for pretraining.
    epochs, batch_size: the recipe.
    recipe: a description of the optimizer (part of the cache key).
    cache_dir: where pretrained models are kept ("" = no cache).
  """
  optimizer: optax.GradientTransformation
  epochs: int
  batch_size: int
  recipe: dict
  cache_dir: str = ""
  stats: dict = dataclasses.field(default_factory=dict)

  def on_start(self, exp, params):
    data = exp.data.server
    if data is None:
      raise ValueError("pretraining needs server data (fedqsn.server_fraction > 0)")
    t0 = time.perf_counter()
    recipe = {**self.recipe, "epochs": self.epochs, "batch_size": self.batch_size,
              "model": exp.cfg.model, "seed": exp.cfg.seed}
    path = None
    if self.cache_dir:
      path = pathlib.Path(self.cache_dir) / f"{_digest(params, data, recipe)}.npz"
    if path is not None and path.exists():
      stored = np.load(path)
      params = jax.tree.unflatten(jax.tree.structure(params),
                                  [jnp.asarray(stored[n]) for n in leaf_names(params)])
      loss = float(stored["__loss__"])
      cached = True
    else:
      key = keylib.run_key(keylib.base_key(exp.cfg.seed), keylib.PRETRAIN)
      fn = jax.jit(lambda p, d, k: pretrain(exp.task, self.optimizer, p, d, self.epochs,
                                            self.batch_size, k, exp.cfg.unroll))
      params, loss = fn(params, data, key)
      loss = float(loss)
      cached = False
      if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, __loss__=loss, **{n: np.asarray(v) for n, v in
                                        zip(leaf_names(params), jax.tree.leaves(params))})
        tmp.replace(path)
    test = batch_eval_data(exp.data.test, exp.cfg.eval_batch_size)
    acc = float(jax.jit(lambda p: evaluate(exp.task, p, test)["accuracy"])(params))
    self.stats = {"server_pretrained_accuracy": acc, "pretrain_loss": loss,
                  "pretrain_seconds": time.perf_counter() - t0, "pretrain_cached": cached,
                  "server_examples": int(np.asarray(data.mask).sum())}
    return params

  def on_end(self, exp, state):
    del exp, state
    return dict(self.stats)
