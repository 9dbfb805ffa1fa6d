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

from fedpriv.fedqsn import masks
from fedpriv.privacy.uplink import PrivateUplink


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class PrivateProxyUplink(PrivateUplink):
  """A `PrivateUplink` whose decoded mean is divided by the coverage; everything else
  (encode, round context, host step, state) is the private uplink's own.

  Attributes (beside `PrivateUplink`'s):
    spec: the model's hidden units (as the downlink's).
    coverage: pytree like the params: the fraction of a round's clients that hold each
      coordinate (made by `make`).
  """
  spec: Any
  coverage: Any

  @classmethod
  def make(cls, inner: PrivateUplink, downlink) -> "PrivateProxyUplink":
    """`inner` (the same mechanism, unravel and seed) for proxies from `downlink` (a
    `FedQSNDownlink`)."""
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
    own = {f.name: getattr(inner, f.name) for f in dataclasses.fields(PrivateUplink)}
    return cls(**own, spec=downlink.spec, coverage=coverage)

  # `encode` is the private uplink's: it masks `delta` by `result.visible`.

  def decode(self, total, params, key, context):
    mean = super().decode(total, params, key, context)
    return jax.tree.map(lambda m, c: m / jnp.asarray(c, m.dtype), mean, self.coverage)
