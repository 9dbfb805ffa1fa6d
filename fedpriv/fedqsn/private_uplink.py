"""FedQSN proxies down, update privacy up: the private uplink behind a proxy downlink.

A FedQSN client trains a proxy whose kept units carry the mask scale
s = 1/((1-p1)(1-p2)) and whose dropped units are frozen at zero. Before the update
leaves the client it is mapped back to the model's scale, restricted to the coordinates
the client held:

    update = unscale(trained - received) * visible          # model scale, masked units 0

and then goes through the update-privacy chain exactly as a plain client's would
(`privacy.uplink.PrivateUplink`: the mechanism's privatizer chain of random mask,
clip, quantize, noise, secure aggregation). Clipping bounds this update, so the privacy argument (sensitivity,
accountant) is the one of `docs/update_privacy.md`, unchanged.

The server's sum is the sum over the clients that survived; `PrivateUplink.decode`
divides it by their number. A unit a client's FedQSN mask dropped contributes 0 to that
mean, so the server divides each coordinate by the fraction of the cohort that holds it
(`coverage`: 1 - (dropped / surviving units) of its unit group, 1 outside unit groups),
the private counterpart of the per-coordinate normalisation of FedQSN's "delta" mode.
The coverage is public (the server drew the masks and knows p2), so dividing by it is
post-processing and costs no privacy. Only "delta" aggregation combines with update
privacy: "average" would overwrite the model with values the privacy mechanism never
bounded.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedpriv.fedavg import ClientResult
from fedpriv.fedqsn import masks


@dataclasses.dataclass(frozen=True, eq=False)
class PrivateProxyUplink:
  """Attributes:
    inner: the `PrivateUplink` that privatizes model-scale updates.
    spec: the model's hidden units (as the downlink's).
    scale: the factor the proxies' kept units carry.
    coverage: pytree like the params: the fraction of a round's clients that hold each
      coordinate (made by `make`).
  """
  inner: Any
  spec: Any
  scale: float
  coverage: Any

  @classmethod
  def make(cls, inner, downlink) -> "PrivateProxyUplink":
    """Wraps `inner` for proxies from `downlink` (a `FedQSNDownlink`)."""
    held = downlink.typical_visible_units()
    fraction = {}
    for group, _ in downlink.spec.groups:
      alive = float(downlink.server_keep[group].sum())
      frac = held[group] / alive if alive else 1.0
      # Units the server mask removed are never updated; any non-zero divisor will do.
      fraction[group] = np.where(downlink.server_keep[group] > 0, frac, 1.0).astype(np.float32)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), downlink.shapes)
    coverage = masks.visibility(zeros, downlink.spec, fraction)
    coverage = jax.tree.map(lambda c: np.maximum(np.asarray(c), 1e-6), coverage)
    return cls(inner, downlink.spec, downlink.scale, coverage)

  @property
  def bits_per_param(self) -> float:
    return self.inner.bits_per_param

  @property
  def prepare_round(self):
    return self.inner.prepare_round

  @property
  def mechanism(self):
    return self.inner.mechanism

  def round_context(self, params, key):
    return self.inner.round_context(params, key)

  def kept_coordinates(self, round_context):
    return self.inner.kept_coordinates(round_context)

  def encode(self, result: ClientResult, key, context):
    update = masks.unscale_tree(result.delta, self.spec, self.scale)
    model_scale = ClientResult(jax.tree.map(jnp.zeros_like, update), update,
                               result.visible, result.weight)
    return self.inner.encode(model_scale, key, context)

  def decode(self, total, params, key, context):
    mean = self.inner.decode(total, params, key, context)
    return jax.tree.map(lambda m, c: m / jnp.asarray(c, m.dtype), mean, self.coverage)
