"""Pairs a model with its loss: a `Task` is what local training and evaluation need."""
from __future__ import annotations

import dataclasses

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedpriv.models import minilm
from fedpriv.models.cnn import CNN
from fedpriv.models.lstm import CharLSTM
from fedpriv.models.tempered_cnn import TemperedCNN
from fedpriv.models.transformer import CharTransformer

# model name -> (task kinds it serves, constructor(num_classes, example_shape, conv_impl))
MODELS: dict[str, tuple[tuple[str, ...], Callable[..., nn.Module]]] = {
    "cnn": (("classification",), lambda n, shape, impl: CNN(num_classes=n, conv_impl=impl)),
    # Papernot et al.'s DP-SGD CNN with the tempered sigmoid (2, 2, 1) = tanh.
    "tempered_cnn": (("classification",),
                     lambda n, shape, impl: TemperedCNN(num_classes=n, conv_impl=impl)),
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
  input_dtype: Any = None  # default: int32 ids for next_token, float32 otherwise
  # `pretrained(fresh_params) -> params`: the initial model from pretrained weights
  # (what it does not cover, e.g. a new head, keeps its fresh initialisation).
  pretrained: Callable[[Any], Any] | None = None

  def for_eval(self) -> "Task":
    """The task with its forward-only formulation (same parameters, same function)."""
    return self if self.eval_model is None else self._replace(model=self.eval_model)

  def init(self, key: jax.Array):
    dtype = self.input_dtype or (jnp.int32 if self.kind == "next_token" else jnp.float32)
    dummy = jnp.zeros((1,) + tuple(self.example_shape), dtype)
    params = self.model.init(key, dummy)["params"]
    return params if self.pretrained is None else self.pretrained(params)

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


def minilm_task(num_classes: int, example_shape: tuple, vocab=None,
                folder: str | None = None) -> Task:
  """all-MiniLM-L6-v2 (pretrained encoder, fresh `num_classes`-way head) on token ids.

  Args:
    num_classes: classes of the head.
    example_shape: `(seq_len,)`.
    vocab: the original ids the data uses (`FederatedDataset.vocab`): the word
      embedding keeps only these rows, in this order; None keeps all of them.
    folder: the weights' folder (default: `minilm.model_dir()`).

  Raises:
    minilm.WeightsNotFoundError: the weights are not installed.
  """
  cfg, encoder = minilm.load_pretrained(folder)
  if vocab is not None:
    vocab = np.asarray(vocab)
    if vocab.min() < 0 or vocab.max() >= cfg.vocab_size:
      raise ValueError(f"vocab holds ids outside [0, {cfg.vocab_size})")
    encoder = minilm.prune(encoder, vocab)
    cfg = dataclasses.replace(cfg, vocab_size=len(vocab))
  if example_shape[0] > cfg.max_positions:
    raise ValueError(f"{example_shape[0]} tokens exceed max_positions={cfg.max_positions}")

  def pretrained(params):
    return {**params, "encoder": jax.tree.map(jnp.asarray, encoder)}

  return Task("minilm", "classification", minilm.SentenceClassifier(cfg, num_classes),
              tuple(example_shape), input_dtype=jnp.int32, pretrained=pretrained)


def make_task(model: str, kind: str, num_classes: int, example_shape: tuple,
              conv_impl: str = "im2col", vocab=None) -> Task:
  """Builds a task.

  Args:
    model: "cnn", "tempered_cnn", "lstm", "transformer" or "minilm" (pretrained, see
      `minilm_task`).
    kind: the dataset's task kind ("classification" or "next_token").
    num_classes: classes, or vocabulary size.
    example_shape: the shape of one input example.
    conv_impl: convolution formulation for training ("im2col" or "xla", see
      `fedpriv.models.layers`); evaluation always uses XLA's forward convolution.
    vocab: "minilm" only: the pretrained ids the data's token ids stand for.
  """
  if model == "minilm":
    if kind != "classification":
      raise ValueError(f"model 'minilm' does not fit a {kind} dataset")
    return minilm_task(num_classes, example_shape, vocab)
  if model not in MODELS:
    raise ValueError(f"unknown model {model!r}; known: {sorted(MODELS)}")
  kinds, ctor = MODELS[model]
  if kind not in kinds:
    raise ValueError(f"model {model!r} does not fit a {kind} dataset (it serves {kinds})")
  shape = tuple(example_shape)
  return Task(model, kind, ctor(num_classes, shape, conv_impl), shape,
              eval_model=ctor(num_classes, shape, "xla"))
