"""Pairs a model with its loss: a `Task` is what local training and evaluation need."""
from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedpriv.models.cnn import CNN
from fedpriv.models.lstm import CharLSTM
from fedpriv.models.transformer import CharTransformer

# model name -> (task kinds it serves, constructor(num_classes, example_shape))
MODELS: dict[str, tuple[tuple[str, ...], Callable[[int, tuple], nn.Module]]] = {
    "cnn": (("classification",), lambda n, shape: CNN(num_classes=n)),
    "lstm": (("next_token",), lambda n, shape: CharLSTM(vocab_size=n)),
    "transformer": (("next_token",),
                    lambda n, shape: CharTransformer(vocab_size=n, max_len=shape[0])),
}


class Task(NamedTuple):
  """A model and its per-example loss.

  `stats(params, x, y, mask)` returns `(loss_sum, correct_sum, count)` over the real
  examples (`mask`), or over the real tokens for next-token prediction (label 0 is
  padding there); dividing by `count` gives mean loss and accuracy.
  """
  name: str
  kind: str
  model: nn.Module
  example_shape: tuple

  def init(self, key: jax.Array):
    dummy = jnp.zeros((1,) + tuple(self.example_shape),
                      jnp.int32 if self.kind == "next_token" else jnp.float32)
    return self.model.init(key, dummy)["params"]

  def apply(self, params, x):
    return self.model.apply({"params": params}, x)

  def stats(self, params, x, y, mask):
    logits = self.apply(params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
    correct = (jnp.argmax(logits, -1) == y)
    if self.kind == "next_token":
      weight = mask[:, None] & (y != 0)
    else:
      weight = mask
    w = weight.astype(jnp.float32)
    return (loss * w).sum(), (correct * w).sum(), w.sum()

  def mean_loss(self, params, x, y, mask):
    """Mean loss over the real examples of a batch (0 for an empty batch)."""
    loss_sum, correct, count = self.stats(params, x, y, mask)
    return loss_sum / jnp.maximum(count, 1.0), (loss_sum, correct, count)


def make_task(model: str, kind: str, num_classes: int, example_shape: tuple) -> Task:
  if model not in MODELS:
    raise ValueError(f"unknown model {model!r}; known: {sorted(MODELS)}")
  kinds, ctor = MODELS[model]
  if kind not in kinds:
    raise ValueError(f"model {model!r} does not fit a {kind} dataset (it serves {kinds})")
  return Task(model, kind, ctor(num_classes, tuple(example_shape)), tuple(example_shape))
