"""Secure aggregation: the server learns the sum of the clients' vectors, nothing else.

Bonawitz et al. (CCS 2017), with SecAgg+'s sparse neighbour graph (Bell et al., CCS
2020) as an option, simulated in one process with real arithmetic and real messages:

  0. AdvertiseKeys: every client makes two X25519 key pairs (c: to encrypt shares,
     s: to agree mask seeds) and sends both public keys; the server forwards each
     client its neighbours' keys.
  1. ShareKeys: every client draws a self-mask seed b_u, splits b_u and its s secret
     key with Shamir's scheme (threshold t, over the prime field of 2^521 - 1) among
     its neighbours and itself, and sends each neighbour's shares encrypted with
     AES-GCM under a key agreed from the c keys (X25519 + HKDF-SHA256); the server
     only routes ciphertexts.
  2. MaskedInputCollection: every client that is still there sends
        y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)  (mod 2^k)
     where s_uv is the X25519 agreement of u's and v's s keys, through HKDF. Pairwise
     masks cancel in the sum. This step runs inside the jitted round (`mask_vector`).
  3. Unmasking: each survivor sends, for every neighbour, its share of b_v if v
     survived, or of v's s secret key if v dropped out. With at least t shares the
     server rebuilds them, recomputes the masks of dropped clients' pairs and removes
     the self-masks (`unmask_sum`); with fewer the round fails (`SecAggError`).

Integers live in Z_(2^k), k = `ring_bits` <= 32, as uint32 (sums wrap modulo 2^32, and
2^k divides 2^32). The ring must hold the sum of every client's vector plus the noise:
`required_ring_bits` sizes it, `fedpriv.privacy.plan` refuses a ring that is too small.

What the simulation does NOT cover: authenticated channels and signatures (the
server is trusted to forward keys honestly; Bonawitz et al.'s malicious-server variant
signs keys and adds a consistency check), a malicious server lying about who dropped
out, clients that drop out *during* unmasking, real networking and timeouts. The PRG
is JAX's threefry2x32 keyed by 64 bits of HKDF output: a counter-based PRF that
expands masks inside jit and under vmap identically, but a 64-bit key is below a
deployment's security level (which would use AES-CTR with a 128-bit key). Private keys
and self-mask seeds come from the operating system's randomness (they cannot change
the sum, which is exact).
"""
from __future__ import annotations

import math
import secrets
import struct
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jax import lax

from fedpriv.privacy import privatizers
from fedpriv.privacy.ring import from_ring, ring_mask, to_ring  # pylint: disable=unused-import

PRIME = 2 ** 521 - 1            # a Mersenne prime; secrets (<= 256 bits) are field elements
SHARE_BYTES = (PRIME.bit_length() + 7) // 8
_RAW = serialization.Encoding.Raw


class SecAggError(RuntimeError):
  """A round cannot be unmasked (too few survivors hold a needed secret)."""


# ---------------------------------------------------------------------------------
# Shamir secret sharing over GF(PRIME).


def shamir_split(secret: int, xs, threshold: int, prime: int = PRIME) -> dict[int, int]:
  """Shares of `secret` at the points `xs` (non-zero, distinct); any `threshold` rebuild it.

  The polynomial's other `threshold - 1` coefficients are uniform field elements from
  the OS, so any `threshold - 1` shares are uniformly distributed whatever the secret
  (tests/test_secagg.py checks this exhaustively over a small field).
  """
  if not 0 <= secret < prime:
    raise ValueError("secret must be a field element")
  if not 1 <= threshold <= len(xs):
    raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
  coeffs = [secret] + [secrets.randbelow(prime) for _ in range(threshold - 1)]
  shares = {}
  for x in xs:
    if not 0 < x < prime:
      raise ValueError("share points must be non-zero field elements")
    y = 0
    for c in reversed(coeffs):  # Horner
      y = (y * x + c) % prime
    shares[x] = y
  return shares


def shamir_combine(shares: dict[int, int], threshold: int, prime: int = PRIME) -> int:
  """Rebuilds the secret from at least `threshold` shares (Lagrange interpolation at 0)."""
  if len(shares) < threshold:
    raise SecAggError(f"{len(shares)} shares cannot rebuild a secret of threshold "
                      f"{threshold}")
  pts = list(shares.items())[:threshold]
  secret = 0
  for i, (xi, yi) in enumerate(pts):
    num, den = 1, 1
    for j, (xj, _) in enumerate(pts):
      if i != j:
        num = num * (-xj) % prime
        den = den * (xi - xj) % prime
    secret = (secret + yi * num * pow(den, -1, prime)) % prime
  return secret


# ---------------------------------------------------------------------------------
# Key agreement.


def _hkdf(shared: bytes, length: int, info: bytes) -> bytes:
  return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(shared)


def mask_seed(private: X25519PrivateKey, peer_public: bytes, round_tag: int) -> np.ndarray:
  """The 64-bit PRG seed two clients share: X25519, then HKDF-SHA256 (as 2 uint32)."""
  shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
  raw = _hkdf(shared, 8, b"fedpriv secagg pair mask " + struct.pack(">Q", round_tag))
  return np.frombuffer(raw, dtype=">u4").astype(np.uint32)


def _share_key(private: X25519PrivateKey, peer_public: bytes) -> bytes:
  shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
  return _hkdf(shared, 32, b"fedpriv secagg share encryption")


def _pub(private: X25519PrivateKey) -> bytes:
  return private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def _priv_int(private: X25519PrivateKey) -> int:
  raw = private.private_bytes(_RAW, serialization.PrivateFormat.Raw,
                              serialization.NoEncryption())
  return int.from_bytes(raw, "big")


def _priv_from_int(value: int) -> X25519PrivateKey:
  return X25519PrivateKey.from_private_bytes(value.to_bytes(32, "big"))


# ---------------------------------------------------------------------------------
# The neighbour graph.


def neighbour_graph(m: int, degree: int, rng: np.random.Generator) -> list[list[int]]:
  """Each client's neighbours: everyone (degree 0 or >= m-1), or a random cycle order in
  which each client is joined to the degree/2 clients on either side (SecAgg+)."""
  if degree <= 0 or degree >= m - 1:
    return [[v for v in range(m) if v != u] for u in range(m)]
  order = rng.permutation(m)
  pos = np.empty(m, int)
  pos[order] = np.arange(m)
  half = degree // 2
  return [sorted(int(order[(pos[u] + o) % m]) for o in range(-half, half + 1) if o)
          for u in range(m)]


# ---------------------------------------------------------------------------------
# What the jitted round needs.


class ClientMasks(NamedTuple):
  """Per-client inputs of step 2, `[M, ...]` over the padded cohort.

  pair_seeds `[M, G, 2]` uint32, pair_signs `[M, G]` int32 (+1 add, -1 subtract, 0 no
  neighbour in that slot), self_seed `[M, 2]` uint32, survived `[M]` bool (False for
  dropouts and cohort padding: their vectors never reach the server).
  """
  pair_seeds: jax.Array
  pair_signs: jax.Array
  self_seed: jax.Array
  survived: jax.Array


class ServerUnmask(NamedTuple):
  """What the server rebuilt in step 3, with fixed shapes.

  self_seeds `[M, 2]` and self_active `[M]` (the survivors' b_u), pair_seeds `[P, 2]`
  and pair_signs `[P]` (masks of (survivor, dropped neighbour) pairs, as the survivor
  added them; 0 = unused slot), survivors: how many vectors are in the sum.
  """
  self_seeds: jax.Array
  self_active: jax.Array
  pair_seeds: jax.Array
  pair_signs: jax.Array
  survivors: jax.Array


class RoundSetup(NamedTuple):
  client: ClientMasks
  server: ServerUnmask
  uplink_bytes: np.ndarray     # [m] protocol bytes each client sent (not the vector)
  downlink_bytes: np.ndarray   # [m] protocol bytes each client received
  dropped: tuple[int, ...]


def pair_capacity(m: int, degree: int, dropouts: int) -> int:
  """Slots for rebuilt (survivor, dropped) pair masks: fixed per run, so one compile."""
  g = m - 1 if degree <= 0 or degree >= m - 1 else degree
  return max(1, dropouts * g)


def run_setup(m: int, padded: int, degree: int, threshold: int, dropped, round_tag: int,
              rng: np.random.Generator, capacity: int | None = None,
              slots: int | None = None) -> RoundSetup:
  """Runs steps 0, 1 and 3 of the protocol for `m` clients (positions 0..m-1).

  Args:
    m: clients taking part (the valid part of the cohort).
    padded: the padded cohort size M (rows past m are zeros).
    degree: neighbours per client (0: all).
    threshold: Shamir threshold t (shares needed to rebuild a secret).
    dropped: positions that drop out after step 1 (their vectors never arrive).
    round_tag: mixed into the mask seeds (the round number).
    rng: host generator for the neighbour graph.
    capacity: slots for rebuilt pair masks (default: exactly what this round needs).
    slots: neighbour slots per client in `ClientMasks` (default: the most any client
      has this round); fixed by a caller whose `m` varies, so shapes stay static.

  Raises:
    SecAggError: a survivor's b_u or a dropout's s key has fewer than t surviving
      share holders.
  """
  dropped = tuple(sorted(set(int(d) for d in dropped)))
  graph = neighbour_graph(m, degree, rng)
  g_max = max(len(n) for n in graph) if m > 1 else 1
  if slots is not None:
    if slots < g_max:
      raise ValueError(f"{g_max} neighbours do not fit {slots} slots")
    g_max = slots
  up = np.zeros(m, np.int64)
  down = np.zeros(m, np.int64)

  # Step 0: AdvertiseKeys.
  c_keys = [X25519PrivateKey.generate() for _ in range(m)]
  s_keys = [X25519PrivateKey.generate() for _ in range(m)]
  adverts = [struct.pack(">I", u) + _pub(c_keys[u]) + _pub(s_keys[u]) for u in range(m)]
  for u in range(m):
    up[u] += len(adverts[u])
    for v in graph[u]:
      down[u] += len(adverts[v])
  c_pub = [a[4:36] for a in adverts]
  s_pub = [a[36:68] for a in adverts]

  # Step 1: ShareKeys (holders of u's shares: its neighbours and itself; x = position+1).
  b_seeds = [secrets.token_bytes(8) for _ in range(m)]
  inbox: list[dict[int, bytes]] = [dict() for _ in range(m)]   # v -> {u: ciphertext}
  own_share: list[tuple[int, int]] = [None] * m
  for u in range(m):
    holders = graph[u] + [u]
    s_shares = shamir_split(_priv_int(s_keys[u]), [h + 1 for h in holders], threshold)
    b_shares = shamir_split(int.from_bytes(b_seeds[u], "big"), [h + 1 for h in holders],
                            threshold)
    own_share[u] = (s_shares[u + 1], b_shares[u + 1])
    for v in graph[u]:
      plain = (struct.pack(">II", u, v) + s_shares[v + 1].to_bytes(SHARE_BYTES, "big") +
               b_shares[v + 1].to_bytes(SHARE_BYTES, "big"))
      nonce = secrets.token_bytes(12)
      ct = nonce + AESGCM(_share_key(c_keys[u], c_pub[v])).encrypt(nonce, plain, None)
      up[u] += len(ct)
      down[v] += len(ct)
      inbox[v][u] = ct

  # Step 2's inputs: pair seeds and signs, self seeds.
  pair_seeds = np.zeros((padded, g_max, 2), np.uint32)
  pair_signs = np.zeros((padded, g_max), np.int32)
  self_seed = np.zeros((padded, 2), np.uint32)
  slot = [dict() for _ in range(m)]
  for u in range(m):
    for j, v in enumerate(graph[u]):
      pair_seeds[u, j] = mask_seed(s_keys[u], s_pub[v], round_tag)
      pair_signs[u, j] = 1 if u < v else -1
      slot[u][v] = j
    self_seed[u] = np.frombuffer(b_seeds[u], ">u4").astype(np.uint32)
  survived = np.zeros(padded, bool)
  survived[:m] = True
  survived[list(dropped)] = False

  # Step 3: Unmasking. Each survivor decrypts what it holds and answers for each
  # neighbour with exactly one of the two shares.
  alive = [u for u in range(m) if survived[u]]
  b_received: list[dict[int, int]] = [dict() for _ in range(m)]
  s_received: list[dict[int, int]] = [dict() for _ in range(m)]
  for v in alive:
    down[v] += 4 * sum(1 for w in graph[v] if survived[w])  # surviving neighbours' ids
    held = {v: own_share[v]}
    for u, ct in inbox[v].items():
      plain = AESGCM(_share_key(c_keys[v], c_pub[u])).decrypt(ct[:12], ct[12:], None)
      su, sv = struct.unpack(">II", plain[:8])
      if (su, sv) != (u, v):
        raise SecAggError(f"share from {u} to {v} is mislabelled")
      s_sh = int.from_bytes(plain[8:8 + SHARE_BYTES], "big")
      b_sh = int.from_bytes(plain[8 + SHARE_BYTES:], "big")
      held[u] = (s_sh, b_sh)
    for u, (s_sh, b_sh) in held.items():
      answer = struct.pack(">I", u) + (b_sh if survived[u] else s_sh).to_bytes(SHARE_BYTES,
                                                                              "big")
      up[v] += len(answer)
      if survived[u]:
        b_received[u][v + 1] = b_sh
      else:
        s_received[u][v + 1] = s_sh

  self_seeds = np.zeros((padded, 2), np.uint32)
  self_active = np.zeros(padded, bool)
  for u in alive:
    if len(b_received[u]) < threshold:
      raise SecAggError(f"client {u}'s self-mask has {len(b_received[u])} surviving share "
                        f"holders, fewer than the threshold {threshold}: the round fails")
    b = shamir_combine(b_received[u], threshold)
    self_seeds[u] = np.frombuffer(b.to_bytes(8, "big"), ">u4").astype(np.uint32)
    self_active[u] = True
  needed = sum(sum(1 for w in graph[d] if survived[w]) for d in dropped)
  cap = max(1, needed) if capacity is None else capacity
  if needed > cap:
    raise ValueError(f"{needed} dropped pairs exceed the capacity {cap}")
  rec_seeds = np.zeros((cap, 2), np.uint32)
  rec_signs = np.zeros(cap, np.int32)
  i = 0
  for d in dropped:
    if len(s_received[d]) < threshold:
      raise SecAggError(f"dropped client {d}'s mask key has {len(s_received[d])} surviving "
                        f"share holders, fewer than the threshold {threshold}: the round "
                        "fails")
    key_d = _priv_from_int(shamir_combine(s_received[d], threshold))
    for w in graph[d]:
      if survived[w]:
        rec_seeds[i] = mask_seed(key_d, s_pub[w], round_tag)
        rec_signs[i] = pair_signs[w, slot[w][d]]
        i += 1

  client = ClientMasks(jnp.asarray(pair_seeds), jnp.asarray(pair_signs),
                       jnp.asarray(self_seed), jnp.asarray(survived))
  server = ServerUnmask(jnp.asarray(self_seeds), jnp.asarray(self_active),
                        jnp.asarray(rec_seeds), jnp.asarray(rec_signs),
                        jnp.asarray(len(alive), jnp.int32))
  return RoundSetup(client, server, up, down, dropped)


# ---------------------------------------------------------------------------------
# Ring arithmetic inside jit.


def prg(seed: jax.Array, size: int, ring_bits: int) -> jax.Array:
  """`size` pseudo-random elements of Z_(2^ring_bits) expanded from a 2 x uint32 seed."""
  key = jax.random.wrap_key_data(seed.astype(jnp.uint32), impl="threefry2x32")
  return jax.random.bits(key, (size,), jnp.uint32) & ring_mask(ring_bits)


def _signed_masks(acc, seeds, signs, ring_bits):
  """acc + sum_j signs[j] * PRG(seeds[j]) in the ring (a scan: memory O(size))."""

  def body(a, item):
    seed, sign = item
    r = prg(seed, a.shape[0], ring_bits)
    a = jnp.where(sign > 0, a + r, jnp.where(sign < 0, a - r, a))
    return a, None

  acc, _ = lax.scan(body, acc, (seeds, signs))
  return acc & ring_mask(ring_bits)


def mask_vector(ring_values: jax.Array, pair_seeds, pair_signs, self_seed,
                ring_bits: int) -> jax.Array:
  """Step 2 for one client: y = x + PRG(b_u) + sum_v +-PRG(s_uv) in Z_(2^k)."""
  y = (ring_values.astype(jnp.uint32) + prg(self_seed, ring_values.shape[0], ring_bits))
  return _signed_masks(y, pair_seeds, pair_signs, ring_bits)


def unmask_sum(total: jax.Array, server: ServerUnmask, ring_bits: int) -> jax.Array:
  """The server's step 3: removes survivors' self-masks and dropped pairs' masks."""
  self_signs = -server.self_active.astype(jnp.int32)
  out = _signed_masks(total.astype(jnp.uint32), server.self_seeds, self_signs, ring_bits)
  return _signed_masks(out, server.pair_seeds, -server.pair_signs, ring_bits)


def secure_aggregation(ring_bits: int) -> privatizers.Stage:
  """The chain's last stage: step 2 on the client, step 3's unmasking on the server.

  The client's integer vector becomes a ring element plus its self mask and its pairwise
  masks (`mask_vector`, with the client's `ClientMasks` row as its context); a client
  that drops out after masking (`survived` False) sends zeros, i.e. nothing reaches the
  sum. The server's inverse removes the survivors' self masks and the dropped clients'
  pair masks (`unmask_sum`, with the round's `ServerUnmask`) and returns the sum of the
  survivors' vectors as ring elements (uint32), which the quantizer's inverse reads.
  """

  def encode(values, key, ctx):
    del key
    masks = ctx.client
    y = mask_vector(to_ring(values, ring_bits), masks.pair_seeds, masks.pair_signs,
                    masks.self_seed, ring_bits)
    return jnp.where(masks.survived, y, jnp.zeros_like(y))

  def decode(total, key, ctx):
    del key
    return unmask_sum(total, ctx.server, ring_bits)

  return privatizers.stage(encode, decode)


def required_ring_bits(clients: int, max_abs: float, noise_std: float,
                       tail_sigmas: float = 10.0) -> int:
  """Smallest k with clients * max_abs + tail_sigmas * noise_std < 2^(k-1).

  `max_abs` bounds each client's integer (centred) coordinate deterministically, so the
  signal can never wrap; the noise (sub-Gaussian with the sum's standard deviation)
  exceeds `tail_sigmas` standard deviations with probability <= 2 exp(-tail^2/2) per
  coordinate (about 4e-22 for 10). A wrap would cost accuracy, never privacy (the
  ring is post-processing of the noisy sum).
  """
  span = clients * max_abs + tail_sigmas * noise_std
  return int(math.floor(math.log2(max(span, 1.0)))) + 2
