"""The character LSTM of LEAF / TFF federated Shakespeare: an 8-dim embedding, two
LSTM layers of 256 units, a dense layer over the vocabulary at every position."""
from __future__ import annotations

import flax.linen as nn
import jax


class CharLSTM(nn.Module):
  vocab_size: int
  embed_dim: int = 8
  hidden: int = 256
  layers: int = 2

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    x = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(tokens)
    for i in range(self.layers):
      x = nn.RNN(nn.OptimizedLSTMCell(self.hidden), name=f"lstm{i}")(x)
    return nn.Dense(self.vocab_size, name="head")(x)
