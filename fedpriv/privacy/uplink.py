"""`PrivateUplink`: FedAvg's uplink seam running the privatizer chain and secure aggregation.

Per client (inside the jitted, vmapped round), on the flat update x = trained - start:

    v = random_mask(p)(x, public round key)        # k of d coordinates, scaled d/k
    v = clip_l2(C)(v)
    codes = quantize_to_codes(b, C, Delta)(v)     # conditional when noise follows
    codes += discrete_gaussian_noise(s)(...)       # distributed noise only
    y = secagg.mask_vector(codes in Z_2^k, ...)     # secure aggregation only

The server (decode) receives only the sum of what clients sent; behind secure
aggregation that is the sum of masked ring vectors plus the seeds it rebuilt in the
unmasking step (`ServerUnmask`), never a single client's vector. It decodes the sum,
adds central noise if that is the mechanism, divides by the number of clients in the
sum (public: who survived is known), scatters the k coordinates back and unflattens.
Clients count equally (not by example count): the DP sum needs a per-client bound.

Secure aggregation's key agreement and secret sharing are host-side Python
(`prepare_round`, between sampling the cohort and the jitted round); the driver
calls it when an uplink has it.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fedpriv.config import secagg_threshold_count
from fedpriv.fedavg import ClientResult, Cohort
from fedpriv.privacy import secagg
from fedpriv.privacy.mechanism import Mechanism
from fedpriv.privacy.privatizers import (chain, clip_l2, codes_center, dequantize,
                                         discrete_gaussian_noise, mask_indices,
                                         quantize_to_codes, quantizer_step)


@dataclasses.dataclass(frozen=True, eq=False)
class PrivateUplink:
  """Encodes clipped, masked, quantized, noised (and secure-aggregation masked) updates.

  Attributes:
    mechanism: the run's privacy mechanism (sizes, bounds, noise).
    unravel: flat vector of length d -> params pytree.
    seed: the run's seed (host-side dropout draws are seeded with it).
  """
  mechanism: Mechanism
  unravel: Callable[[jax.Array], Any]
  seed: int = 0

  @property
  def bits_per_param(self) -> float:
    """Bits per parameter of the vector alone (the ledger adds protocol overhead)."""
    m = self.mechanism
    return m.keep * m.uplink_value_bits / m.size

  # -- shared by all clients of a round ---------------------------------------------
  def round_context(self, params, key):
    """Public per-round randomness: the kept coordinates (all clients use the same)."""
    del params
    m = self.mechanism
    if m.keep == m.size:
      return {}
    return {"idx": mask_indices(key, m.size, m.keep)}

  def _client_chain(self):
    m = self.mechanism
    stages = [clip_l2(m.config.clip)]
    if m.quantized:
      stages.append(quantize_to_codes(m.config.bits, m.config.clip, m.level_bound))
    if m.config.noise == "distributed":
      stages.append(discrete_gaussian_noise(m.client_sigma))
    return chain(*stages)

  # -- one client ---------------------------------------------------------------------
  def encode(self, result: ClientResult, key, context):
    round_ctx, client_ctx = context
    m = self.mechanism
    delta = result.delta
    if result.visible is not None:
      delta = jax.tree.map(lambda d, v: d * v.astype(d.dtype), delta, result.visible)
    flat, _ = ravel_pytree(delta)
    flat = flat.astype(jnp.float32)
    if "idx" in round_ctx:
      flat = flat[round_ctx["idx"]] * jnp.float32(m.mask_scale)
    priv = self._client_chain()
    out, _ = priv.apply(flat, priv.init(flat), key)
    if not m.quantized:
      return {"values": out, "count": jnp.ones((), jnp.float32)}
    if not m.config.secagg:
      return {"codes": out.astype(jnp.int32), "count": jnp.ones((), jnp.float32)}
    masks = client_ctx
    ring = secagg.to_ring(out, m.ring_bits)
    y = secagg.mask_vector(ring, masks.pair_seeds, masks.pair_signs, masks.self_seed,
                           m.ring_bits)
    return {"masked": jnp.where(masks.survived, y, jnp.zeros_like(y))}

  # -- the server ---------------------------------------------------------------------
  def decode(self, total, params, key, context):
    del params
    round_ctx, server_ctx = context
    m = self.mechanism
    b = m.config.bits
    if not m.quantized:
      count = total["count"]
      s = total["values"]
    elif not m.config.secagg:
      count = total["count"]
      centred = total["codes"].astype(jnp.float32) - count * codes_center(b)
      s = centred * jnp.float32(quantizer_step(b, m.config.clip))
    else:
      count = server_ctx.survivors
      raw = secagg.unmask_sum(total["masked"], server_ctx, m.ring_bits)
      twice_offset = count.astype(jnp.uint32) * jnp.uint32(2 ** b - 1)  # 2 n center
      shifted = secagg.from_ring(raw - twice_offset // 2, m.ring_bits)
      centred = shifted.astype(jnp.float32) - (twice_offset % 2).astype(jnp.float32) / 2
      s = centred * jnp.float32(quantizer_step(b, m.config.clip))
      count = count.astype(jnp.float32)
    if m.config.noise == "central":
      s = s + jnp.float32(m.central_sigma) * jax.random.normal(key, s.shape, jnp.float32)
    # Poisson sampling divides by the expected count: the drawn count differs between
    # add/remove neighbours, so the released mean must not depend on it.
    denom = jnp.float32(m.survivors) if m.poisson else jnp.maximum(count, 1.0)
    mean = s / denom
    if "idx" in round_ctx:
      mean = jnp.zeros((m.size,), jnp.float32).at[round_ctx["idx"]].set(mean)
    return self.unravel(mean)

  # -- host side, between sampling and the jitted round ---------------------------------
  @property
  def prepare_round(self):
    """The host step for secure aggregation, or None (then the driver keeps the
    single-jit round)."""
    return self._prepare_round if self.mechanism.config.secagg else None

  def _prepare_round(self, cohort: Cohort, rnd: int):
    """Runs secure aggregation's key agreement, sharing and (simulated) dropouts.

    Returns:
      `(cohort with the clients' mask inputs as context, server_context, host_info)`;
      host_info has the protocol bytes per client and the seconds it took.
    """
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
