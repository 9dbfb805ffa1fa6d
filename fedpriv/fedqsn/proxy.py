"""The FedQSN downlink: every client receives a masked, quantized proxy of the model.

    proxy   = nf_quantize(apply_mask(params, client_mask))     # the server's scale
    factors = client_mask * s                                   # per unit (output column)

with s = 1 / ((1 - p1)(1 - p2)), or units / kept units for the "count_of_all" client
mask (`masks.unit_scales`),

where the client mask is drawn, per client and round, on top of the server mask drawn
once per run. The client's model computes with `proxy * factors`: the official code's
masked and scaled activations (masks scale activations, not weights). Local training
differentiates through that product (`local.local_train(factors=)`), so the proxy's
values, their update and what the client sends back are all in the model's own
coordinates, and a gradient step moves the global model as far as it would move the
official model. `visible` is the client's mask (dropped units' columns and bias entries
are 0), so local training never revives a dropped unit. `client_model` is written for
one client: `FedAvg` vmaps it over the cohort, and `cohort_proxies` builds the proxies of
a whole cohort in one call.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedpriv import keys as keylib
from fedpriv import links
from fedpriv.fedavg import ClientModel
from fedpriv.fedqsn import masks, nf_quant, wire
from fedpriv.fedqsn.units import ModelSpec

# Stages folded into a client's PROXY key (one purpose each).
CLIENT_MASK = 0


@dataclasses.dataclass(frozen=True, eq=False)
class FedQSNDownlink(links.Downlink):
  """Builds each client's proxy from the global model and the client's PROXY key.

  Attributes:
    spec: hidden units and quantized leaves of the model.
    shapes: the model's parameter shapes (`jax.eval_shape` of its init).
    server_keep: the run's server mask `{group: 0/1 numpy vector}` (see `make`).
    p1, p2: server and client mask ratios.
    client_mask: "bernoulli", "exact" or "count_of_all" (see `masks`).
    bits: NF bits of the large weights (32: none).
    block_size: values per quantization block.
  """
  spec: ModelSpec
  shapes: Any
  server_keep: dict
  p1: float = 0.0
  p2: float = 0.0
  client_mask: str = "exact"
  bits: int = 32
  block_size: int = 64

  @classmethod
  def make(cls, spec: ModelSpec, shapes, base_key: jax.Array, **kw) -> "FedQSNDownlink":
    """Draws the server mask from the run's SERVER_MASK key (same seed, same mask)."""
    server = masks.server_mask(spec, keylib.run_key(base_key, keylib.SERVER_MASK),
                               kw.get("p1", 0.0))
    out = cls(spec, shapes, {g: np.asarray(v) for g, v in server.items()}, **kw)
    out.scale  # pylint: disable=pointless-statement  (refuses masks that keep no unit)
    return out

  @property
  def scale(self) -> dict[str, float]:
    """The factor each group's kept units are multiplied by, `{group: s}`."""
    return masks.unit_scales(self.spec, self.server_keep, self.p1, self.p2,
                             self.client_mask)

  def client_keep(self, key: jax.Array) -> dict:
    """The client's mask from its PROXY key."""
    return masks.client_mask(self.spec, jax.random.fold_in(key, CLIENT_MASK),
                             self.server_keep, self.p2, self.client_mask)

  def build(self, params, keep: dict):
    """The proxy's values under mask `keep` (the server's scale, dropped units zero)."""
    masked = masks.apply_mask(params, self.spec, keep)
    return nf_quant.nf_quantize(masked, self.spec, self.bits, self.block_size)

  def received(self, params, keep: dict) -> ClientModel:
    """What a client holding mask `keep` receives: values, visibility, unit factors."""
    return ClientModel(self.build(params, keep), masks.visibility(params, self.spec, keep),
                       masks.unit_factors(params, self.spec, keep, self.scale))

  def client_model(self, params, key) -> ClientModel:
    return self.received(params, self.client_keep(key))

  def server_masked(self, params):
    """The global model under the server mask alone (full precision)."""
    keep = {g: jnp.asarray(v) for g, v in self.server_keep.items()}
    return masks.apply_mask(params, self.spec, keep, masks.mask_scale(self.p1))

  def message_bits(self, keep: dict):
    """Exact bits of the message carrying a proxy with mask `keep` (traceable)."""
    counts = {g: keep[g].sum().astype(jnp.int32) for g in keep}
    return wire.message_bits(self.spec, self.shapes, counts, self.bits, self.block_size)

  def typical_visible_units(self) -> dict[str, int]:
    """Units per group a client sees: exact for the "exact" and "count_of_all" client
    masks, the (rounded) expectation for Bernoulli masks."""
    return {g: int(round(masks.kept_units(n, int(self.server_keep[g].sum()), self.p2,
                                          self.client_mask)))
            for g, n in self.spec.groups}

  @property
  def bits_per_param(self) -> float:
    """Cost of one proxy: exact for the "exact" and "count_of_all" client masks, at the
    expected number of units for Bernoulli masks (the hooks report the measured mean as well)."""
    return float(wire.bits_per_param(self.spec, self.shapes, self.typical_visible_units(),
                                     self.bits, self.block_size))


def cohort_proxies(downlink: FedQSNDownlink, params, client_keys: jax.Array):
  """The proxies of a whole cohort in one vmapped call (`client_keys` are client keys).

  Returns:
    `(ClientModel stacked on a leading client axis, message bits [clients])`.
  """

  def one(ckey):
    pkey = keylib.stage_key(ckey, keylib.PROXY)
    keep = downlink.client_keep(pkey)
    return downlink.received(params, keep), downlink.message_bits(keep)

  return jax.vmap(one)(client_keys)
