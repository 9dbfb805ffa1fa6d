"""A small causal transformer for character-level language modelling.

The FedQSN paper's LLM setting (GPT-2) in miniature. Pre-LayerNorm blocks; the places
FedQSN masks have their own dense layers, so a unit of the model is an output column of
one named matrix: the embedding output (`embed`), each block's attention projection
(`attn_out`) and MLP projection (`mlp_out`), all before the residual add.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Block(nn.Module):
  dim: int
  heads: int
  mlp_ratio: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    t = x.shape[-2]
    hd = self.dim // self.heads
    h = nn.LayerNorm(name="ln1")(x)
    q = nn.Dense(self.dim, name="query")(h).reshape(*h.shape[:-1], self.heads, hd)
    k = nn.Dense(self.dim, name="key")(h).reshape(*h.shape[:-1], self.heads, hd)
    v = nn.Dense(self.dim, name="value")(h).reshape(*h.shape[:-1], self.heads, hd)
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(hd).astype(x.dtype)
    causal = jnp.tril(jnp.ones((t, t), bool))
    logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
    att = jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), v)
    x = x + nn.Dense(self.dim, name="attn_out")(att.reshape(*x.shape[:-1], self.dim))
    h = nn.LayerNorm(name="ln2")(x)
    h = nn.gelu(nn.Dense(self.mlp_ratio * self.dim, name="mlp_in")(h))
    return x + nn.Dense(self.dim, name="mlp_out")(h)


class CharTransformer(nn.Module):
  vocab_size: int
  max_len: int = 80
  dim: int = 128
  heads: int = 4
  depth: int = 2

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    t = tokens.shape[-1]
    if t > self.max_len:
      raise ValueError(f"sequence length {t} exceeds max_len={self.max_len}")
    x = nn.Embed(self.vocab_size, self.dim, name="embed")(tokens)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.dim))
    x = x + pos[:t]
    for i in range(self.depth):
      x = Block(self.dim, self.heads, name=f"block{i}")(x)
    x = nn.LayerNorm(name="ln_f")(x)
    return nn.Dense(self.vocab_size, name="head")(x)
