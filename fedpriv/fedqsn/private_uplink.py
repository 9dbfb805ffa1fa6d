"""FedQSN proxies down, update privacy up: the private uplink behind a proxy downlink.

A FedQSN client trains a proxy in the model's own coordinates (the mask scale lives in
the proxy's unit factors) whose dropped units are frozen at zero. Its update, restricted
to the coordinates the client held,

    update = (trained - received) * visible                 # masked units 0

goes through the update-privacy chain exactly as a plain client's would
(`privacy.uplink.PrivateUplink`: the mechanism's privatizer chain of random mask, clip,
quantize, noise, secure aggregation). Clipping bounds this update, so the privacy
argument (sensitivity,
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
    inner: the `PrivateUplink` that privatizes the updates.
    spec: the model's hidden units (as the downlink's).
    coverage: pytree like the params: the fraction of a round's clients that hold each
      coordinate (made by `make`).
  """
  inner: Any
  spec: Any
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
    return cls(inner, downlink.spec, coverage)

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
    return self.inner.encode(result, key, context)  # masks `delta` by `result.visible`

  def decode(self, total, params, key, context):
    mean = self.inner.decode(total, params, key, context)
    return jax.tree.map(lambda m, c: m / jnp.asarray(c, m.dtype), mean, self.coverage)
