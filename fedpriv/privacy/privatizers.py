"""Privatizers: the stages of the update-privacy chain, each a client transform plus its
server inverse.

A stage is `Stage(round_context, encode, decode)`, made by a small factory that closes
over its hyper-parameters (the shape of optax's transformations and jax_privacy's
privatizers):

    public = stage.round_context(key)                    # once per round, same for all
    y = stage.encode(x, key, ClientContext(public, client_row))      # on each client
    s = stage.decode(sum_of_y, key, ServerContext(public, server, count))  # on the sum

`chain(*stages)` is itself a stage: `encode` runs the stages in order, `decode` runs
their inverses in reverse order on the sum of what the clients sent, and stage i gets
the key `fold_in(key, i)` (on the client, on the server and for the public round
context alike), so no two stages ever share randomness. Every stage is pure, works
under `jit` and `vmap`, and is stateless. A server inverse sees only the *sum* over
clients, so each client transform is linear in what the server needs to undo (a
scatter, an affine map of integer codes, ring masks that cancel) or is noise the
server leaves in place. `Mechanism.privatizer()` (mechanism.py) builds the one chain a
run uses from the config, and `PrivateUplink` (uplink.py) runs it: adding a stage
means writing its factory, adding it to `Mechanism.privatizer()`, and testing it.

The order fedpriv runs them in, and why the DP guarantee holds for that order
-----------------------------------------------------------------------------
For one client with update x in R^d:

  1. `random_mask(p, d)`: keep k = round((1-p) d) coordinates, scale them by d/k
     (unbiased: each coordinate is kept with probability k/d). The kept coordinates
     come from the public round key, the same for every client, so the server's
     inverse scatters the k summed values back. The rescaling can grow the norm by up
     to d/k, so nothing before this point bounds the sensitivity.
  2. `clip_l2(C)`: ||y||_2 <= C for what is actually sent (zeros when the norm is not
     finite). Clipping *after* the mask is what makes C a bound on the released vector.
  2b. `hadamard_rotation(k)` (`privacy.rotation = "hadamard"` only): pads the clipped
     k-vector with zeros to D = the next power of two and applies the orthogonal map
     y = H S x / sqrt(D) (S: random signs from the public round key, H: the D x D
     Walsh-Hadamard matrix), so ||y|| = ||x|| <= C and each coordinate of y is
     sub-Gaussian with scale ||x|| / sqrt(D) (Kairouz, Liu & Steinke 2021). The server
     inverts it on the sum (a linear map commutes with the sum) and drops the padding.
     It lets the quantizer below use the range [-t C / sqrt(D), t C / sqrt(D)] (t =
     `privacy.rotation_sigmas`) instead of [-C, C]: its step shrinks by sqrt(D) / t.
  3. `central_gaussian_noise(sigma)` (central noise only): nothing on the client; the
     server adds N(0, sigma^2) to the float sum. It sits before the quantizer in the
     chain because inverses run in reverse: its server part runs after the quantizer's
     inverse has turned integer codes back into floats.
  4. `stochastic_quantize(bits, R, Delta, ring_bits)`: 2^b levels evenly spaced over
     [-R, R], R = C without rotation (the range is fixed by the clip bound, never by the
     data: |y_i| <= ||y||_2 <= C), R = t C / sqrt(D) with it (fixed by C, D and t, never
     by the data; a coordinate beyond R is saturated to the end level without secure
     aggregation and carried modulo the ring with it, and both are counted). Unbiased randomized rounding to a neighbouring level. With DP noise the
     conditional variant re-draws the rounding while the centred integer codes' norm
     exceeds a fixed bound Delta (Kairouz, Liu & Steinke 2021's bound
     sqrt(c^2 + k/4 + sqrt(2 ln(1/beta)) (c + sqrt(k)/2)), c = C / step), and after a
     few tries falls back to rounding every code toward the centre, whose norm is at
     most sqrt(c^2 + k/4) <= Delta. So ||codes - centre||_2 <= Delta holds
     *deterministically*, and Delta (in levels) is the per-client L2 sensitivity of
     everything after it. The server's inverse removes n centres from the sum of n
     clients' codes (exactly, in the ring the sum lives in) and scales by the step.
  5. `discrete_gaussian_noise(s)` (distributed noise only): each of the n surviving
     clients adds N_Z(0, s^2) to its integer codes, so the sum carries a sum of n
     discrete Gaussians; the server leaves it there. Quantizing *before* the noise
     matters: distributed shares must be integers for the ring.
  6. `secagg.secure_aggregation(ring_bits)`: the codes as ring elements plus pairwise
     and self masks that cancel in the sum (fedpriv/privacy/secagg.py).

Everything after the noise (secure aggregation's masks, the ring, the server's
decoding) is post-processing of the noisy sum. What the accountant assumes about that
sum is in `fedpriv/privacy/accounting.py`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fedpriv.privacy import ring


class ClientContext(NamedTuple):
  """What a stage's client transform sees besides the update.

  Attributes:
    round: the stage's public per-round value (from its `round_context`).
    client: the client's row of `Cohort.context` (secure aggregation's mask inputs), or
      None.
  """
  round: Any = None
  client: Any = None


class ServerContext(NamedTuple):
  """What a stage's server inverse sees besides the sum.

  Attributes:
    round: the stage's public per-round value (from its `round_context`).
    server: the server's context of the round (secure aggregation's rebuilt seeds), or
      None.
    count: how many clients' vectors are in the sum (float32 scalar).
  """
  round: Any = None
  server: Any = None
  count: Any = 1.0


def _no_round_context(key):
  del key


def _identity(x, key, ctx):
  del key, ctx
  return x


class Diagnosed(NamedTuple):
  """A stage's output with counts for the simulation's metrics (e.g. how many values
  the quantizer saturated). `chain` unwraps it and returns the merged counts beside the
  final output. The counts are the simulation's diagnostics: a deployed client would
  not send them, and the ledger does not count them."""
  value: Any
  diagnostics: dict


class Stage(NamedTuple):
  """A client transform and its server inverse (see the module docstring)."""
  round_context: Callable[[jax.Array], Any]
  encode: Callable[[Any, jax.Array, ClientContext], Any]
  decode: Callable[[Any, jax.Array, ServerContext], Any]


def stage(encode=_identity, decode=_identity, round_context=_no_round_context) -> Stage:
  """A `Stage` whose missing parts are the identity (and no round context)."""
  return Stage(round_context, encode, decode)


def chain(*stages: Stage) -> Stage:
  """Runs `stages` in order on the client and their inverses in reverse on the server;
  stage i gets `fold_in(key, i)` everywhere (its own randomness)."""

  def round_context(key):
    return tuple(s.round_context(jax.random.fold_in(key, i)) for i, s in enumerate(stages))

  def encode(x, key, ctx=ClientContext()):
    public = ctx.round if ctx.round is not None else (None,) * len(stages)
    diagnostics = {}
    for i, s in enumerate(stages):
      x = s.encode(x, jax.random.fold_in(key, i), ClientContext(public[i], ctx.client))
      if isinstance(x, Diagnosed):
        diagnostics.update(x.diagnostics)
        x = x.value
    return Diagnosed(x, diagnostics) if diagnostics else x

  def decode(total, key, ctx=ServerContext()):
    public = ctx.round if ctx.round is not None else (None,) * len(stages)
    for i in reversed(range(len(stages))):
      total = stages[i].decode(total, jax.random.fold_in(key, i),
                               ServerContext(public[i], ctx.server, ctx.count))
    return total

  return Stage(round_context, encode, decode)


def without_diagnostics(x):
  """The value of a stage's output (drops `Diagnosed` counts)."""
  return x.value if isinstance(x, Diagnosed) else x


def global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                      for x in jax.tree.leaves(tree)))


def zero_if_not_finite(tree):
  """The tree itself when every value is finite, else zeros of the same shape: a client
  whose update overflowed or diverged sends a zero update (and still counts)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return tree
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
  return jax.tree.map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), tree)


def clip_l2(clip: float) -> Stage:
  """Scales the whole update so its global L2 norm is at most `clip`.

  An update whose norm is not finite (NaN or Inf entries, or entries so large that the
  float32 sum of squares overflows) becomes zeros, so the bound holds for every input.
  The server's inverse is the identity.

  Args:
    clip: the bound C (> 0).
  """
  if not clip > 0:
    raise ValueError(f"clip must be > 0, got {clip}")

  def encode(update, key, ctx):
    del key, ctx
    norm = global_norm(update)
    factor = jnp.where(jnp.isfinite(norm), jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-30)),
                       0.0)
    # where, not a product: 0 * Inf is NaN.
    return jax.tree.map(
        lambda x: jnp.where(jnp.isfinite(norm), x * factor, 0.0).astype(x.dtype), update)

  return stage(encode)


# ---------------------------------------------------------------------------------
# Masking: k of d coordinates, chosen by the public round key.


def mask_indices(key: jax.Array, size: int, keep: int) -> jax.Array:
  """`keep` distinct coordinates of `size`, uniformly at random, sorted.

  The coordinates with the `keep` smallest of `size` i.i.d. 32-bit random keys (ties at
  the cut broken by position, which happens with probability about size / 2^31). The
  cut is found by a 32-step binary search over counts, so this is O(32 size) with no
  sort: `jax.random.permutation` sorts, and XLA:CPU takes seconds to sort millions of
  coordinates (3.6 s vs 0.28 s here for 1.66M, measured on 2 loaded CPU cores).
  """
  return smallest_keys(jax.random.bits(key, (size,), jnp.uint32), keep)


def smallest_keys(u: jax.Array, keep: int) -> jax.Array:
  """Sorted positions of the `keep` smallest uint32 keys of `u` (ties: lower position)."""

  def set_bit_if_still_below(i, cut):
    cand = cut | jnp.left_shift(jnp.uint32(1), (31 - i).astype(jnp.uint32))
    return jnp.where(jnp.sum(u < cand) < keep, cand, cut)

  cut = jax.lax.fori_loop(0, 32, set_bit_if_still_below, jnp.uint32(0))  # keep-th smallest
  below, at_cut = u < cut, u == cut
  chosen = below | (at_cut & (jnp.cumsum(at_cut) <= keep - jnp.sum(below)))
  return jnp.nonzero(chosen, size=keep)[0].astype(jnp.int32)


def kept_count(size: int, ratio: float) -> int:
  """k = round((1 - ratio) * size), at least 1."""
  return max(1, min(size, int(round((1.0 - ratio) * size))))


def random_mask(ratio: float, size: int) -> Stage:
  """Keeps k = round((1-ratio) size) random coordinates of a flat vector, scaled by size/k.

  The round context is the k kept coordinates, `mask_indices(key, size, k)` for the
  public round key, so every client of a round keeps the same ones and the sum over
  clients is over the same coordinates: only k values per client travel, also behind
  secure aggregation. The client sends the `[k]` values; the server's inverse scatters
  the summed `[k]` back into a `[size]` vector (zeros elsewhere). Every coordinate is
  kept with probability k/size, so `decode(encode(x))` is an unbiased estimate of x.

  Args:
    ratio: p in [0, 1), the fraction dropped.
    size: d, the length of the flat vectors it is applied to.
  """
  if not 0 <= ratio < 1:
    raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
  keep = kept_count(size, ratio)
  scale = size / keep

  def round_context(key):
    return mask_indices(key, size, keep)

  def encode(update, key, ctx):
    del key
    return update[ctx.round] * jnp.asarray(scale, update.dtype)

  def decode(total, key, ctx):
    del key
    return jnp.zeros((size,), total.dtype).at[ctx.round].set(total)

  return stage(encode, decode, round_context)


# ---------------------------------------------------------------------------------
# Randomized Hadamard rotation: every coordinate about ||x|| / sqrt(D).


def next_power_of_two(n: int) -> int:
  """The smallest power of two >= n (n >= 1)."""
  return 1 << max(0, int(n - 1).bit_length())


def fwht(x: jax.Array) -> jax.Array:
  """The unnormalized fast Walsh-Hadamard transform H x over the last axis (length a
  power of two): log2(D) butterfly passes of O(D) each. H H = D I."""
  d = x.shape[-1]
  if d & (d - 1):
    raise ValueError(f"fwht needs a power-of-two length, got {d}")
  lead = x.shape[:-1]
  h = 1
  while h < d:
    y = x.reshape(lead + (d // (2 * h), 2, h))
    a, b = y[..., 0, :], y[..., 1, :]
    x = jnp.stack([a + b, a - b], axis=-2).reshape(lead + (d,))
    h *= 2
  return x


def rotation_signs(key: jax.Array, size: int) -> jax.Array:
  """The diagonal S of the rotation: `size` independent +-1 (float32) from `key`."""
  return jax.random.rademacher(key, (size,), jnp.float32)


def hadamard_rotate(x: jax.Array, signs: jax.Array) -> jax.Array:
  """y = H S x / sqrt(D): orthogonal, so ||y|| = ||x||."""
  return fwht(x * signs) * jnp.float32(1.0 / math.sqrt(x.shape[-1]))


def hadamard_unrotate(y: jax.Array, signs: jax.Array) -> jax.Array:
  """x = S H y / sqrt(D), the inverse (and transpose) of `hadamard_rotate`."""
  return fwht(y) * jnp.float32(1.0 / math.sqrt(y.shape[-1])) * signs


def hadamard_rotation(size: int) -> Stage:
  """Randomized Hadamard rotation of a flat `[size]` vector (Kairouz, Liu & Steinke 2021).

  The client pads its vector with zeros to D = `next_power_of_two(size)` and sends
  y = H S x / sqrt(D) (`[D]` values); S is D random signs from the stage's *public*
  round key (the same for every client of a round, so the sum of the y is the
  rotation of the sum). The server applies S H / sqrt(D) to the sum and drops the
  padding. The map is orthogonal, so an L2 bound on x is one on y; each y_j =
  sum_i (+-x_i) / sqrt(D) is sub-Gaussian with scale ||x|| / sqrt(D):
  P(|y_j| > t ||x|| / sqrt(D)) <= 2 exp(-t^2 / 2), whatever x is (a spike included).

  Padding to a power of two, not blockwise: the range argument then holds over the whole
  vector, at the cost of up to 2x more values on the wire (`Mechanism.dim`).

  Args:
    size: the length of the vectors it is applied to (>= 1).
  """
  if size < 1:
    raise ValueError(f"size must be >= 1, got {size}")
  padded = next_power_of_two(size)

  def round_context(key):
    return rotation_signs(key, padded)

  def encode(x, key, ctx):
    del key
    if x.shape[-1] != size:
      raise ValueError(f"expected a vector of {size}, got shape {x.shape}")
    return hadamard_rotate(jnp.pad(x.astype(jnp.float32), (0, padded - size)), ctx.round)

  def decode(total, key, ctx):
    del key
    return hadamard_unrotate(total.astype(jnp.float32), ctx.round)[:size]

  return stage(encode, decode, round_context)


# ---------------------------------------------------------------------------------
# Quantization: 2^b levels over [-bound, bound].


def quantizer_step(bits: int, bound: float) -> float:
  """Distance between neighbouring levels of the b-bit quantizer over [-bound, bound]."""
  return 2.0 * bound / (2 ** bits - 1)


def codes_center(bits: int) -> float:
  """The code of the value 0 (a half-integer: there is an even number of levels)."""
  return (2 ** bits - 1) / 2.0


def _scaled(x, bits: int, bound: float, saturate: bool = True):
  """x in level units, clamped to [0, 2^b - 1] when `saturate` (else unbounded: codes
  beyond the range are carried by the ring, modulo its size)."""
  u = (x.astype(jnp.float32) + bound) / quantizer_step(bits, bound)
  return jnp.clip(u, 0.0, 2.0 ** bits - 1) if saturate else u


def beyond_range(x: jax.Array, bound: float) -> jax.Array:
  """How many coordinates of `x` lie outside [-bound, bound] (int32)."""
  return jnp.sum(jnp.abs(x.astype(jnp.float32)) > bound, dtype=jnp.int32)


def _round_randomly(key, u):
  low = jnp.floor(u)
  up = jax.random.uniform(key, u.shape) < (u - low)
  return (low + up).astype(jnp.int32)


def quantize_codes(x: jax.Array, key: jax.Array, bits: int, bound: float) -> jax.Array:
  """Unbiased stochastic rounding of `x` to integer codes in [0, 2^b - 1].

  Values outside [-bound, bound] are clamped first (after an L2 clip to `bound` none
  are). Code j stands for the value `-bound + j * step`.
  """
  return _round_randomly(key, _scaled(x, bits, bound))


def dequantize(codes: jax.Array, bits: int, bound: float) -> jax.Array:
  return -bound + codes.astype(jnp.float32) * quantizer_step(bits, bound)


def dequantize_sum(total: jax.Array, count, bits: int, bound: float,
                   ring_bits: int = 32) -> jax.Array:
  """The float sum that `count` clients' codes (plus integer noise) stand for.

  `total` is the sum of the clients' integer vectors in Z_(2^ring_bits) (uint32 ring
  elements, or an int32 sum, which wraps modulo 2^32). The `count` centres are removed
  in the ring, where it is exact, before the result is read as a signed integer: the
  centred sum is what the ring is sized to hold (`secagg.required_ring_bits`), the
  uncentred one may not fit.
  """
  raw = total if total.dtype == jnp.uint32 else lax.bitcast_convert_type(
      total.astype(jnp.int32), jnp.uint32)
  twice_offset = jnp.asarray(count).astype(jnp.uint32) * jnp.uint32(2 ** bits - 1)  # 2 n c
  shifted = ring.from_ring(raw - twice_offset // 2, ring_bits)
  centred = shifted.astype(jnp.float32) - (twice_offset % 2).astype(jnp.float32) / 2
  return centred * jnp.float32(quantizer_step(bits, bound))


def rounding_norm_bound(clip: float, bits: int, size: int, beta: float = 1e-4,
                        bound: float | None = None) -> float:
  """The bound Delta (in levels) that `conditional_codes` enforces on centred codes.

  Kairouz, Liu & Steinke (2021, Lemma on randomized rounding): a vector of norm <= c
  rounded randomly has squared norm at most c^2 + k/4 + sqrt(2 ln(1/beta)) (c + sqrt(k)/2)
  with probability >= 1 - beta. The bound is enforced deterministically (see
  `conditional_codes`), so beta only sets how often a draw is retried. `bound` is the
  quantizer's range (default `clip`; smaller after a rotation): c = clip / step.
  """
  c = clip / quantizer_step(bits, clip if bound is None else bound)
  return math.sqrt(c * c + size / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) *
                   (c + math.sqrt(size) / 2.0))


def conditional_codes(x: jax.Array, key: jax.Array, bits: int, bound: float,
                      norm_bound: float, tries: int = 8, saturate: bool = True):
  """Stochastic codes whose centred norm ||codes - center||_2 is always <= `norm_bound`.

  Draws unbiased randomized roundings until one meets the bound (at most `tries`);
  if none does, rounds every coordinate toward the centre, which gives
  |code - center| <= max(|u - center|, 1/2) per coordinate, so a squared norm of at
  most ||x / step||^2 + k/4 <= norm_bound^2 whenever ||x||_2 <= bound and
  `norm_bound` comes from `rounding_norm_bound`. (Near-unbiased: the condition fails
  with probability <= beta per draw.) A non-finite x becomes the zero vector first, so
  the bound holds for every input.

  Returns:
    `(codes int32, tries_used)` with tries_used = 0 when the fallback was taken.
  """
  x = zero_if_not_finite(x)
  u = _scaled(x, bits, bound, saturate)
  center = codes_center(bits)
  limit = jnp.float32(norm_bound) ** 2

  def sq_norm(codes):
    return jnp.sum(jnp.square(codes.astype(jnp.float32) - center))

  def cond(state):
    attempt, _, ok = state
    return jnp.logical_and(~ok, attempt < tries)

  def body(state):
    attempt, _, _ = state
    codes = _round_randomly(jax.random.fold_in(key, attempt), u)
    return attempt + 1, codes, sq_norm(codes) <= limit

  init = (jnp.zeros((), jnp.int32), jnp.zeros(u.shape, jnp.int32), jnp.zeros((), bool))
  attempts, codes, ok = lax.while_loop(cond, body, init)
  v = u - center
  magnitude = jnp.maximum(jnp.floor(jnp.abs(v) - 0.5) + 0.5, 0.5)  # levels are half-integers
  toward = center + jnp.where(v >= 0, 1.0, -1.0) * magnitude
  fallback = toward.astype(jnp.int32)
  codes = jnp.where(ok, codes, fallback)
  return codes, jnp.where(ok, attempts, 0)


def stochastic_quantize(bits: int, bound: float, norm_bound: float | None = None,
                        ring_bits: int = 32, saturate: bool = True,
                        count_beyond: bool = False) -> Stage:
  """Unbiased b-bit stochastic quantization of a flat vector over [-bound, bound].

  The client sends int32 codes in [0, 2^b - 1]: exactly 2^b levels, code j standing for
  `-bound + j * step`; the range is fixed by `bound` (the clip bound), never taken from
  the data. With `norm_bound` the rounding is conditional (`conditional_codes`), so
  ||codes - centre||_2 <= norm_bound always. The server's inverse (`dequantize_sum`)
  turns the sum of the clients' codes, read in Z_(2^ring_bits), back into the float
  sum (`count` from the server context).

  Args:
    bits: b in [1, 24].
    bound: the range [-bound, bound] (the clip bound).
    norm_bound: Delta in levels for conditional rounding, or None.
    ring_bits: the ring the sum of codes lives in (32: a plain int32 sum).
    saturate: clamp values beyond the range to the end levels (True: codes stay in
      [0, 2^b - 1], b bits each); False: their codes go beyond, and the ring the sum
      lives in carries them modulo 2^ring_bits (Kairouz, Liu & Steinke's modular
      clipping; only behind secure aggregation, whose ring elements are what is sent).
      Conditional rounding's norm bound holds either way (|code - centre| never grows).
    count_beyond: return `Diagnosed(codes, {"beyond_range": count})`, the number of
      coordinates outside [-bound, bound] (saturated, or carried by the ring).
  """
  if not 1 <= bits <= 24:
    raise ValueError(f"bits must be in [1, 24], got {bits}")

  def encode(update, key, ctx):
    del ctx
    if norm_bound is None:
      codes = _round_randomly(key, _scaled(update, bits, bound, saturate))
    else:
      codes = conditional_codes(update, key, bits, bound, norm_bound, saturate=saturate)[0]
    if count_beyond:
      return Diagnosed(codes, {"beyond_range": beyond_range(zero_if_not_finite(update), bound)})
    return codes

  def decode(total, key, ctx):
    del key
    return dequantize_sum(total, ctx.count, bits, bound, ring_bits)

  return stage(encode, decode)


# ---------------------------------------------------------------------------------
# Noise.


def central_gaussian_noise(stddev: float) -> Stage:
  """The server adds N(0, stddev^2) to every coordinate of the (float) sum; the client
  does nothing. Works on pytrees, keeping each leaf's dtype."""
  if not stddev >= 0:
    raise ValueError(f"stddev must be >= 0, got {stddev}")

  def decode(total, key, ctx):
    del ctx
    leaves, treedef = jax.tree.flatten(total)
    if len(leaves) == 1:  # the production path: one flat vector, one key
      keys = [key]
    else:
      keys = [jax.random.fold_in(key, i) for i in range(len(leaves))]
    out = [x + (stddev * jax.random.normal(k, x.shape, jnp.float32)).astype(x.dtype)
           for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, out)

  return stage(decode=decode)


def exponential_from_bits(hi: jax.Array, lo: jax.Array) -> jax.Array:
  """E = -log(u) ~ Exp(1) from two uint32 words, u = (hi 2^32 + lo + 1) / 2^64.

  u is uniform on a grid of 2^-64 over (0, 1] and is formed in float32 with a relative
  error below 2^-23 at every scale (float32 keeps 24 significant bits down to 1e-38),
  so E is accurate to about 4e-6 in absolute terms all the way to its largest value,
  64 ln 2 = 44.36. (A float32 uniform, on a 2^-23 grid, stops at 15.9 and is coarse
  well before that: P(E > 12) = 6e-6 would be carried by 51 grid points.)
  """
  u = (hi.astype(jnp.float32) + (lo.astype(jnp.float32) + 1.0) * 2.0 ** -32) * 2.0 ** -32
  return jnp.maximum(-jnp.log(u), 0.0)  # u can round to 1 + 2^-24


def _exponential(key, shape):
  words = jax.random.bits(key, (2,) + tuple(shape), jnp.uint32)
  return exponential_from_bits(words[0], words[1])


def sample_discrete_gaussian(key: jax.Array, shape, sigma: float) -> jax.Array:
  """Samples N_Z(0, sigma^2), P(y) proportional to exp(-y^2 / (2 sigma^2)) on the integers.

  Canonne, Kamath & Steinke (2020), Algorithm 3, with floating-point parts:
  propose Y from the discrete Laplace with scale t = floor(sigma) + 1 (P(y) prop. to
  exp(-|y|/t)), accept with probability exp(-gamma), gamma = (|Y| - sigma^2/t)^2 /
  (2 sigma^2), and repeat with fresh draws until every coordinate has accepted.

  * The proposal: |Y| = t K + U with K = floor(E), E ~ Exp(1) (`exponential_from_bits`:
    P(K >= k) = e^-k) and U = floor(t F), F ~ Exp(1) truncated to [0, 1) by inversion,
    so P(U = u) is prop. to exp(-u/t); a random sign, and the draw (sign -, |Y| = 0)
    is rejected, which makes Y exactly discrete-Laplace distributed.
  * The acceptance: accept iff E' > gamma for a fresh E' ~ Exp(1), since
    P(E' > gamma) = exp(-gamma), without ever comparing a uniform with a tiny number.

  This is NOT an exact sampler (CKS's is, with rational arithmetic only): the parts use
  float32. What that costs, and what the tests check (tests/test_privatizers.py):
  every exponential is accurate to about 4e-6 in absolute terms up to 44.36, so each
  acceptance probability is within a relative 1e-5 of exp(-gamma), and the proposal's
  atom boundaries are off by at most about t * 2e-7 of an atom; an atom with
  gamma > 44.36 (beyond about sigma + 9.4 sigma) is never output, whose total true
  probability is below 1e-21. (A float32 uniform compared with exp(-gamma) instead, as
  before, is off by 4% at 8 sigma and gives no mass at all beyond about 11 sigma.)

  The loop: every coordinate first gets `_FIRST_PROPOSALS` proposals at once; the few
  that accepted none are compacted into a small buffer that loops until all have
  accepted, and a loop over everything catches an overflowing buffer. The loops end
  with probability 1 and nothing is truncated by them (acceptance is about 0.7 per
  proposal, so the buffer's loop runs about log(n)/1.2 times for n coordinates); all
  shapes are static, so it works under `jit` and `vmap`.
  """
  if sigma <= 0:
    return jnp.zeros(shape, jnp.int32)
  t = math.floor(sigma) + 1
  s2 = float(sigma) ** 2
  n = math.prod(shape)
  f_top = 1.0 - math.exp(-1.0)  # F = -log(1 - v f_top), v in [0, 1): F in [0, 1)

  def propose(k, size):
    k_e, k_f, k_acc = jax.random.split(k, 3)
    whole = jnp.floor(_exponential(k_e, size))
    bits = jax.random.bits(k_f, size, jnp.uint32)
    v = (bits >> 8).astype(jnp.float32) * 2.0 ** -24  # 24 bits, in [0, 1)
    negative = (bits & 1) == 1
    frac = jnp.minimum(jnp.floor(-t * jnp.log1p(-v * f_top)), t - 1)
    magnitude = t * whole + frac
    gamma = jnp.square(magnitude - s2 / t) / (2.0 * s2)
    accept = (_exponential(k_acc, size) > gamma) & ~(negative & (magnitude == 0))
    return jnp.where(negative, -magnitude, magnitude), accept

  def loop(k0, out, done):
    def body(state):
      i, out, done = state
      y, accept = propose(jax.random.fold_in(k0, i), out.shape)
      return i + 1, jnp.where(done, out, y), done | accept
    _, out, done = lax.while_loop(lambda s: ~jnp.all(s[2]), body,
                                  (jnp.zeros((), jnp.int32), out, done))
    return out, done

  ys, acc = propose(jax.random.fold_in(key, 0), (_FIRST_PROPOSALS, n))
  first = jnp.argmax(acc, axis=0)
  out = jnp.take_along_axis(ys, first[None], axis=0)[0]
  done = acc.any(axis=0)
  cap = min(n, n // 8 + 64)  # ~9% of coordinates reject twice (acceptance ~0.7)
  (slots,) = jnp.nonzero(~done, size=cap, fill_value=n)
  in_use = slots < n
  slot_out, slot_done = loop(jax.random.fold_in(key, 1), jnp.zeros((cap,), jnp.float32),
                             ~in_use)
  out = out.at[slots].set(slot_out, mode="drop")
  done = done.at[slots].set(slot_done, mode="drop")
  out, _ = loop(jax.random.fold_in(key, 2), out, done)  # only if the buffer overflowed
  return out.astype(jnp.int32).reshape(shape)


_FIRST_PROPOSALS = 2


def discrete_gaussian_noise(sigma: float) -> Stage:
  """Each client adds N_Z(0, sigma^2) to its integer codes (its share of distributed
  noise); the server leaves the summed noise in place."""
  if not sigma >= 0:
    raise ValueError(f"sigma must be >= 0, got {sigma}")

  def encode(update, key, ctx):
    del ctx
    return update + sample_discrete_gaussian(key, update.shape, sigma)

  return stage(encode)
