"""`PrivateUplink`: FedAvg's uplink seam running the privatizer chain.

The chain is `mechanism.privatizer()` (fedpriv/privacy/privatizers.py has the stages
and the argument for their order): per client, inside the jitted, vmapped round, on
the flat update x = trained - start,

    v = random_mask(p)        k of d coordinates (public round key), scaled d/k
    v = clip_l2(C)            ||v|| <= C; zeros if the norm is not finite
        central noise         nothing on the client
    v = stochastic_quantize   int32 codes; conditional (||codes - c|| <= Delta) with noise
    v += discrete Gaussian    distributed noise only
    v = secure_aggregation    ring element + masks that cancel in the sum

and every message has one format, `{"vector": v, "count": 1 or 0}` (0 for a client
that drops out of secure aggregation after masking), plus, with a rotation, the
simulation's `"diagnostics"` (how many of the client's values fell outside the
quantizer's range: a metric of the run, which a deployed client would not send). The server (decode) receives only
the sum of the messages; it runs the stages' inverses in reverse order on the summed
vector (unmask the ring, remove the codes' centres, add central noise, scatter the k
coordinates back), divides by the count (public: who survived is known) and
unflattens. Clients count equally, whatever their data or example count: the DP sum
needs a per-client bound, and a client's place in the denominator must not depend on
its data, so a client whose update is not finite sends the encoding of a zero update
(under secure aggregation a masked zero vector, so the masks still cancel) and counts.

Secure aggregation's key agreement and secret sharing are host-side Python
(`prepare_round`, between sampling the cohort and the jitted round; `has_host_step` is
True then, and `fedpriv.rounds.compile_round` runs it).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fedpriv import links
from fedpriv.config import secagg_threshold_count
from fedpriv.fedavg import ClientResult, Cohort
from fedpriv.privacy import secagg
from fedpriv.privacy.mechanism import Mechanism
from fedpriv.privacy.privatizers import ClientContext, Diagnosed, ServerContext


@dataclasses.dataclass(frozen=True, eq=False)
class PrivateUplink(links.Uplink):
  """Encodes updates with the mechanism's privatizer chain; decodes the sum with its
  inverses.

  Attributes:
    mechanism: the run's privacy mechanism (sizes, bounds, noise).
    unravel: flat vector of length d -> params pytree.
    seed: the run's seed (host-side dropout draws are seeded with it).
  """
  mechanism: Mechanism
  unravel: Callable[[jax.Array], Any]
  seed: int = 0

  @functools.cached_property
  def privatizer(self):
    return self.mechanism.privatizer()

  @property
  def bits_per_param(self) -> float:
    """Bits per parameter of the vector alone (the ledger adds protocol overhead)."""
    m = self.mechanism
    return m.dim * m.uplink_value_bits / m.size

  # -- the uplink's server state (adaptive clipping) ---------------------------------
  @property
  def stateful(self) -> bool:
    """Whether the uplink keeps state in `ServerState.uplink` (adaptive clipping)."""
    return self.mechanism.adaptive

  def init_state(self):
    """The clip scale s = C_t / C_1 (float32, 1 before round 1), or () when static
    (then `update_state` does nothing)."""
    return jnp.ones((), jnp.float32) if self.stateful else ()

  def update_state(self, state, total, key):
    """Adaptive clipping's server step (Andrew et al. 2021, Algorithm 1).

    The clients sent b_i - 1/2 (b_i = 1 when their update's norm was at most the
    bound); the server adds N(0, sigma_b^2) with its secret key, divides by the
    count (the expected count with Poisson sampling) and moves the bound
    geometrically toward the target quantile gamma: s <- s exp(-eta (b - gamma)).

    Returns:
      `(new scale, metrics)`; the metrics are the bound used this round and the noisy
      fraction b (both public: computed from the noisy release).
    """
    if not self.stateful:
      return state, {}
    m = self.mechanism
    cfg = m.config
    noisy = total["below_clip"] + m.count_stddev * jax.random.normal(key, (), jnp.float32)
    denom = jnp.float32(m.cohort) if m.poisson else jnp.maximum(total["count"], 1.0)
    fraction = noisy / denom + 0.5
    new = state * jnp.exp(-cfg.adaptive_clip_lr * (fraction - cfg.adaptive_clip_quantile))
    return new, {"clip_bound": state * cfg.clip, "clip_fraction_below": fraction}

  # -- shared by all clients of a round ---------------------------------------------
  def round_context(self, params, key, state):
    """Public per-round values of the stages (the kept coordinates: all clients use the
    same), and with adaptive clipping `(those, clip scale)` (1 when `state` is ())."""
    del params
    if key is None:
      raise ValueError("the private uplink needs the round's public key: pass the base "
                       "key to FedAvg.apply")
    ctx = self.privatizer.round_context(key)
    if not self.stateful:
      return ctx
    return ctx, (jnp.ones((), jnp.float32) if isinstance(state, tuple) else state)

  def kept_coordinates(self, round_context):
    """The flat coordinates clients send this round, or None when they send all."""
    m = self.mechanism
    if self.stateful:
      round_context = round_context[0]
    return None if m.keep == m.size else round_context[0]  # the chain's first stage

  # -- one client ---------------------------------------------------------------------
  def encode(self, result: ClientResult, key, context):
    round_ctx, client_ctx = context
    delta = result.delta
    if result.visible is not None:
      delta = jax.tree.map(lambda d, v: d * v.astype(d.dtype), delta, result.visible)
    flat, _ = ravel_pytree(delta)
    flat = flat.astype(jnp.float32)  # non-finite: the clip stage sends zeros
    m = self.mechanism
    below = None
    if self.stateful:  # the chain runs at the round-1 bound on the update / s
      round_ctx, scale = round_ctx
      flat = flat / scale
      seen = flat if m.keep == m.size else flat[round_ctx[0]] * m.mask_scale  # as clipped
      norm = jnp.sqrt(jnp.sum(jnp.square(seen)))
      below = (jnp.isfinite(norm) & (norm <= m.config.clip)).astype(jnp.float32) - 0.5
    vector = self.privatizer.encode(flat, key, ClientContext(round_ctx, client_ctx))
    sends = client_ctx.survived if self.mechanism.config.secagg else True
    message = {"count": jnp.asarray(sends, jnp.float32)}
    if below is not None:
      message["below_clip"] = below
    if isinstance(vector, Diagnosed):  # the simulation's counts: summed, never sent
      vector, message["diagnostics"] = vector.value, vector.diagnostics
    message["vector"] = vector
    return message

  # -- the server ---------------------------------------------------------------------
  def decode(self, total, params, key, context):
    del params
    round_ctx, server_ctx = context
    count = total["count"]
    scale = 1.0
    if self.stateful:
      round_ctx, scale = round_ctx
    s = scale * self.privatizer.decode(total["vector"], key,
                                       ServerContext(round_ctx, server_ctx, count))
    # Poisson sampling divides by the expected count: the drawn count differs between
    # add/remove neighbours, so the released mean must not depend on it.
    m = self.mechanism
    denom = jnp.float32(m.cohort) if m.poisson else jnp.maximum(count, 1.0)
    return self.unravel(s / denom)

  # -- host side, between sampling and the jitted round ---------------------------------
  @property
  def has_host_step(self) -> bool:
    """Secure aggregation's key agreement runs on the host before each round."""
    return self.mechanism.config.secagg

  def prepare_round(self, cohort: Cohort, rnd: int):
    """Runs secure aggregation's key agreement, sharing and (simulated) dropouts
    (without secure aggregation: nothing).

    Returns:
      `(cohort with the clients' mask inputs as context, server_context, host_info)`;
      host_info has the protocol bytes per client and the seconds it took.
    """
    if not self.has_host_step:
      return cohort, None, {}
    m = self.mechanism
    t0 = time.perf_counter()
    valid = np.asarray(cohort.valid)
    n = int(valid.sum())
    rng = np.random.default_rng([self.seed, 4, int(rnd)])
    dropped = rng.choice(n, size=m.dropouts, replace=False) if m.dropouts else []
    threshold, slots = m.threshold, None
    if m.poisson:  # a variable cohort (no dropouts): its own graph, fixed-shape slots
      if n < 2:  # a lone client's "sum" is its vector: it does not send
        n = 0
      deg = m.config.secagg_neighbors
      group = (deg if deg and deg < n - 1 else max(n - 1, 1)) + 1
      threshold = min(max(n, 1), secagg_threshold_count(m.config.secagg_threshold, group))
      slots = m.group - 1
    setup = secagg.run_setup(
        n, valid.shape[0], m.config.secagg_neighbors, threshold, dropped, int(rnd), rng,
        capacity=secagg.pair_capacity(m.capacity if m.poisson else n,
                                      m.config.secagg_neighbors, m.dropouts),
        slots=slots)
    info = {"secagg_uplink_bytes": setup.uplink_bytes,
            "secagg_downlink_bytes": setup.downlink_bytes,
            "sent": np.asarray(setup.client.survived)[:n],
            "secagg_seconds": time.perf_counter() - t0}
    return cohort._replace(context=setup.client), setup.server, info


def flat_size_and_unravel(params) -> tuple[int, Callable]:
  flat, unravel = ravel_pytree(params)
  return int(flat.shape[0]), unravel
