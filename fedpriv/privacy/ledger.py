"""The communication ledger: exact bits each client sends and receives per round.

Uplink, per client and round:
  * the vector: k coordinates (k = d without masking; D, k padded to a power of two,
    with a Hadamard rotation) of `Mechanism.uplink_value_bits`
    each: 32 for float32, b for b-bit codes, k_ring for secure-aggregation ring
    elements (masked values are uniform in the ring, so every bit is needed; bit-packed);
    clients that drop out send none; no per-client scale travels (the quantizer's range
    [-R, R] is public: R = C, or t C / sqrt(D) with a rotation) and no indices (the kept coordinates come from a public seed);
  * secure aggregation's protocol messages, counted from the bytes the protocol
    actually produced (`secagg.RoundSetup.uplink_bytes`): two public keys, one
    AES-GCM ciphertext of two Shamir shares per neighbour, one share per neighbour
    when unmasking.
Downlink, per client and round:
  * the model: d x the downlink's bits per parameter (32 for the plain float32 model);
  * the mask's coordinates and the rotation's signs: one 64-bit public round seed when
    either is on (the kept indices and the signs are expanded from it, not sent);
  * secure aggregation: the neighbours' public keys, the ciphertexts routed to the
    client, the list of surviving neighbours (`RoundSetup.downlink_bytes`).
Averaged over the clients sampled in each round and over rounds, divided by d, they
are summary.json's `uplink_bits_per_param` and `downlink_bits_per_param`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

MASK_SEED_BITS = 64


class RoundBits(NamedTuple):
  """Bits per sampled client in one round: `uplink [m]`, `downlink [m]`."""
  uplink: np.ndarray
  downlink: np.ndarray


def vector_bits(mech) -> int:
  """Bits of one client's update vector as sent."""
  return mech.dim * mech.uplink_value_bits


def round_bits(mech, downlink_bits_per_param: float, sent=None, secagg_uplink_bytes=None,
               secagg_downlink_bytes=None, sampled=None) -> RoundBits:
  """Exact bits of each sampled client in one round.

  Args:
    mech: the run's `Mechanism`.
    downlink_bits_per_param: what the downlink spends per model parameter.
    sent: `[m]` bool, clients whose vector reached the server (default: all m).
    secagg_uplink_bytes, secagg_downlink_bytes: `[m]` protocol bytes per client.
    sampled: m, the clients sampled this round (default: the cohort; with Poisson
      sampling the round's draw, which `sent` gives when secure aggregation runs).
  """
  if sent is not None:
    m = len(np.asarray(sent))
  else:
    m = mech.cohort if sampled is None else int(sampled)
  sent = np.ones(m, bool) if sent is None else np.asarray(sent, bool)
  up = np.where(sent, vector_bits(mech), 0).astype(np.float64)
  down = np.full(m, downlink_bits_per_param * mech.size, np.float64)
  if mech.config.mask_ratio > 0 or mech.rotating:
    down += MASK_SEED_BITS
  if secagg_uplink_bytes is not None:
    up += 8.0 * np.asarray(secagg_uplink_bytes, np.float64)[:m]
  if secagg_downlink_bytes is not None:
    down += 8.0 * np.asarray(secagg_downlink_bytes, np.float64)[:m]
  return RoundBits(up, down)


class Totals(NamedTuple):
  """Running sums over rounds (an immutable accumulator: `add` returns a new one)."""
  uplink: float = 0.0
  downlink: float = 0.0
  clients: int = 0

  def add(self, bits: RoundBits) -> "Totals":
    return Totals(self.uplink + float(bits.uplink.sum()),
                  self.downlink + float(bits.downlink.sum()), self.clients + bits.uplink.size)

  def per_param(self, size: int) -> dict[str, float]:
    n = max(self.clients, 1) * size
    return {"uplink_bits_per_param": self.uplink / n,
            "downlink_bits_per_param": self.downlink / n}
