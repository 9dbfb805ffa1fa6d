"""How the server turns the clients' trained proxies back into a global model.

A client trains its proxy (in the model's own coordinates: the mask scale lives in the
proxy's unit factors, see `proxy.py`) and sends its trained model, optionally
NF-quantized (`upload_bits`), restricted to the coordinates it holds. The server knows
every client's mask, so, coordinate by coordinate, it averages over the clients that saw
it (weighted by example counts). Coordinates no client saw are left untouched.

- "average" (the paper's public code): the new value of a coordinate is the mean of the
  clients' trained values, so the full-precision global model is overwritten by averages
  of quantized proxies.
- "delta": the server keeps full precision and adds the mean of (trained - received).

With p1 = p2 = 0 and no quantization both reduce to FedAvg's weighted mean.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fedpriv import links
from fedpriv.fedavg import ClientResult
from fedpriv.fedqsn import nf_quant, wire
from fedpriv.fedqsn.units import ModelSpec

MODES = ("average", "delta")


@dataclasses.dataclass(frozen=True, eq=False)
class FedQSNUplink(links.Uplink):
  """Attributes:
    spec: hidden units and quantized leaves.
    mode: "average" or "delta".
    upload_bits: NF bits of the uploaded model (32: float32).
    block_size: values per quantization block.
    bits_per_param: the upload's cost (set by `make`; reported in summary.json).
  """
  spec: ModelSpec
  mode: str = "delta"
  upload_bits: int = 32
  block_size: int = 64
  bits_per_param: float = 32.0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"aggregation mode must be one of {MODES}, got {self.mode!r}")

  @classmethod
  def make(cls, downlink, mode: str, upload_bits: int) -> "FedQSNUplink":
    """An uplink matching a `FedQSNDownlink` (same units and block size).

    The upload carries the client's visible coordinates in the downlink's layout, without
    the unit bitmaps (the server drew the masks)."""
    bpp = float(wire.bits_per_param(downlink.spec, downlink.shapes,
                                    downlink.typical_visible_units(), upload_bits,
                                    downlink.block_size, bitmaps=False))
    return cls(downlink.spec, mode, upload_bits, downlink.block_size, bpp)

  def uploaded(self, trained):
    """What the client sends: its trained proxy, NF-quantized if `upload_bits` < 32."""
    return nf_quant.nf_quantize(trained, self.spec, self.upload_bits, self.block_size)

  def encode(self, result: ClientResult, key, context):
    del key, context
    w = result.weight
    sent = self.uploaded(result.trained)
    if self.mode == "delta":
      sent = jax.tree.map(jnp.subtract, sent, result.start)
    value = sent
    visible = result.visible
    if visible is None:
      visible = jax.tree.map(jnp.ones_like, value)
    return {"value": jax.tree.map(lambda v, m: w * m * v, value, visible),
            "count": jax.tree.map(lambda m: w * m, visible)}

  def decode(self, total, params, key, context):
    """The mean update (new model - global) on coordinates some client saw, else 0."""
    del key, context

    def one(value, count, p):
      seen = count > 0
      mean = value / jnp.where(seen, count, 1.0)
      if self.mode == "average":
        mean = mean - p
      return jnp.where(seen, mean, jnp.zeros_like(mean))

    return jax.tree.map(one, total["value"], total["count"], params)
