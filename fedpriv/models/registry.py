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

# model name -> (task kinds it serves, constructor(num_classes, example_shape, conv_impl))
MODELS: dict[str, tuple[tuple[str, ...], Callable[..., nn.Module]]] = {
    "cnn": (("classification",), lambda n, shape, impl: CNN(num_classes=n, conv_impl=impl)),
    "lstm": (("next_token",), lambda n, shape, impl: CharLSTM(vocab_size=n)),
    "transformer": (("next_token",),
                    lambda n, shape, impl: CharTransformer(vocab_size=n, max_len=shape[0])),
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
  eval_model: nn.Module | None = None  # same params, formulated for forward-only use

  def for_eval(self) -> "Task":
    """The task with its forward-only formulation (same parameters, same function)."""
    return self if self.eval_model is None else self._replace(model=self.eval_model)

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


def make_task(model: str, kind: str, num_classes: int, example_shape: tuple,
              conv_impl: str = "im2col") -> Task:
  """Builds a task.

  Args:
    model: "cnn", "lstm" or "transformer".
    kind: the dataset's task kind ("classification" or "next_token").
    num_classes: classes, or vocabulary size.
    example_shape: the shape of one input example.
    conv_impl: convolution formulation for training ("im2col" or "xla", see
      `fedpriv.models.layers`); evaluation always uses XLA's forward convolution.
  """
  if model not in MODELS:
    raise ValueError(f"unknown model {model!r}; known: {sorted(MODELS)}")
  kinds, ctor = MODELS[model]
  if kind not in kinds:
    raise ValueError(f"model {model!r} does not fit a {kind} dataset (it serves {kinds})")
  shape = tuple(example_shape)
  return Task(model, kind, ctor(num_classes, shape, conv_impl), shape,
              eval_model=ctor(num_classes, shape, "xla"))
