"""FedQSN's two masks over hidden units: the server's (once per run) and the client's.

A mask is a dict `{group: keep}` with one float 0/1 vector per unit group (see
`units.ModelSpec`). A client's proxy holds the model's values with each dropped unit's
output column and bias entry zeroed (`apply_mask` at scale 1), and computes with every
kept unit's output multiplied by `scale` (`unit_factors`), as inverted dropout with a
fixed mask does: the proxy computes, in expectation over masks, what the model computes,
and its parameters stay in the model's coordinates (the paper's parametrization: masks
scale activations, not weights).

- `server_mask(spec, key, p1)`: drawn once per run from a run key; exactly
  floor(p1 * units) units of each layer dropped (the owner's protection level is fixed).
- `client_mask(spec, key, server, p2, variant)`: drawn per client per round on top of the
  server mask; "bernoulli" drops each surviving unit independently with probability p2,
  "exact" drops exactly floor(p2 * surviving units) of them, "count_of_all" (the official
  code's default) drops exactly floor(p2 * all units) of the survivors (at p1 0.5, p2 0.2:
  50% + 20% = 70% of the layer hidden).

Scales (`unit_scales`): with "bernoulli" and "exact", kept units are scaled by 1/(1-p1)
for the server mask and again by 1/(1-p2) for the client mask (`mask_scale`). With
"count_of_all" a layer of n units keeps exactly k = n - floor(p1 n) - floor(p2 n), a
uniformly random k-subset (the server's subset is uniform, and so is the client's subset
of it), so each unit is kept with probability k/n and the scale that keeps every
activation unbiased is n/k (about 1/(1 - p1 - p2)). The official code scales these by
1/((1-p1)(1-p2)) (2.5 at p1 0.5, p2 0.2, where n/k is 3.33), which shrinks the layer's
expected output to 75%; fedpriv uses n/k.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fedpriv.fedqsn.units import ModelSpec

VARIANTS = ("bernoulli", "exact", "count_of_all")
_EPS = 1e-9  # floor(p * n) in float64 must not lose a unit to rounding (0.29 * 100)


def num_dropped(p: float, n: int) -> int:
  """floor(p * n), robust to float rounding."""
  return int(math.floor(p * n + _EPS))


def _exact_keep(key, alive: jax.Array, k: int) -> jax.Array:
  """Drops `k` of the `alive` units, uniformly at random; returns a 0/1 float vector."""
  u = jnp.where(alive > 0, jax.random.uniform(key, alive.shape), jnp.inf)
  rank = jnp.zeros(alive.shape, jnp.int32).at[jnp.argsort(u)].set(
      jnp.arange(alive.shape[0], dtype=jnp.int32))
  return (alive > 0) & (rank >= k)


def _bernoulli_keep(key, alive: jax.Array, p: float) -> jax.Array:
  return (alive > 0) & (jax.random.uniform(key, alive.shape) >= p)


def server_mask(spec: ModelSpec, key: jax.Array, p1: float) -> dict[str, jax.Array]:
  """Exactly floor(p1 * n) units dropped per layer; `key` is the run's server-mask key."""
  out = {}
  for i, (group, n) in enumerate(spec.groups):
    alive = jnp.ones((n,), jnp.float32)
    out[group] = _exact_keep(jax.random.fold_in(key, i), alive,
                             num_dropped(p1, n)).astype(jnp.float32)
  return out


def client_mask(spec: ModelSpec, key: jax.Array, server: dict[str, jax.Array], p2: float,
                variant: str) -> dict[str, jax.Array]:
  """A client's mask on top of `server` (zero wherever the server mask is).

  Args:
    spec: the model's units.
    key: the client's key for this round (one stage of its PROXY key).
    server: the server mask.
    p2: ratio of the units to drop: of the server's survivors ("bernoulli", "exact"), or
      of all units ("count_of_all", dropped from the survivors).
    variant: "bernoulli", "exact" or "count_of_all" (see the module doc). For "exact" the
      number of surviving units must be static: it is read from `server` with numpy.

  Returns:
    `{group: keep}` float 0/1 vectors.
  """
  if variant not in VARIANTS:
    raise ValueError(f"client mask variant must be one of {VARIANTS}, got {variant!r}")
  out = {}
  for i, (group, n) in enumerate(spec.groups):
    alive = server[group]
    gkey = jax.random.fold_in(key, i)
    if variant == "exact":
      surviving = int(round(float(jax.device_get(alive).sum())))
      keep = _exact_keep(gkey, alive, num_dropped(p2, surviving))
    elif variant == "count_of_all":
      keep = _exact_keep(gkey, alive, num_dropped(p2, n))
    else:
      keep = _bernoulli_keep(gkey, alive, p2)
    out[group] = keep.astype(jnp.float32)
  return out


def mask_scale(p1: float, p2: float = 0.0) -> float:
  """The factor kept units are scaled by after the server (and client) mask."""
  return 1.0 / ((1.0 - p1) * (1.0 - p2))


def kept_units(n: int, surviving: int, p2: float, variant: str) -> float:
  """Units of a layer of `n` a client keeps, `surviving` the server's survivors (the
  expectation for "bernoulli")."""
  if variant == "exact":
    return surviving - num_dropped(p2, surviving)
  if variant == "count_of_all":
    return surviving - num_dropped(p2, n)
  return surviving * (1.0 - p2)


def unit_scales(spec: ModelSpec, server: dict, p1: float, p2: float,
                variant: str) -> dict[str, float]:
  """`{group: scale}` of the kept units of client masks of `variant` (see the module doc).

  Raises:
    ValueError: "count_of_all" would drop every unit the server kept in some group.
  """
  if variant != "count_of_all":
    s = mask_scale(p1, p2)
    return {g: s for g, _ in spec.groups}
  out = {}
  for group, n in spec.groups:
    surviving = int(round(float(jax.device_get(server[group]).sum())))
    kept = kept_units(n, surviving, p2, variant)
    if kept <= 0:
      raise ValueError(f"client mask count_of_all: p1 {p1} and p2 {p2} leave no unit of "
                       f"{group!r} ({n} units, {surviving} after the server mask)")
    out[group] = n / kept
  return out


def _group_scale(scale, group):
  return scale[group] if isinstance(scale, dict) else scale


def apply_mask(params, spec: ModelSpec, keep: dict[str, jax.Array], scale=1.0):
  """Zeroes dropped units' columns and bias entries, scales kept units by `scale` (a
  float, or `{group: float}`; 1 leaves kept units at the server's scale)."""

  def one(name, x):
    group = spec.group_of(name)
    if group is None:
      return x
    return x * (keep[group] * _group_scale(scale, group)).astype(x.dtype)

  return spec.map(one, params)


def unit_factors(params, spec: ModelSpec, keep: dict[str, jax.Array], scale):
  """Per-output-column factors of a proxy: `keep * scale` on unit leaves, 1 elsewhere.

  A model that computes with `params * factors` computes exactly what the official code
  computes by multiplying each masked activation by its mask vector (0 or the scale),
  while `params` stay at the server's scale. Leaves are `[units]` vectors (broadcast
  along the last axis) or scalars, so they cost nothing next to the params.
  """

  def one(name, x):
    group = spec.group_of(name)
    if group is None:
      return jnp.ones((), x.dtype)
    return (keep[group] * _group_scale(scale, group)).astype(x.dtype)

  return spec.map(one, params)


def visibility(params, spec: ModelSpec, keep: dict[str, jax.Array]):
  """0/1 pytree like `params`: the coordinates a client holding mask `keep` sees."""

  def one(name, x):
    group = spec.group_of(name)
    ones = jnp.ones(x.shape, x.dtype)
    return ones if group is None else ones * keep[group].astype(x.dtype)

  return spec.map(one, params)
