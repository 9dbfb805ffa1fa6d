"""Running a function for every client of a cohort and summing what it returns.

Clients sit on a leading array axis. `map_reduce` vmaps a one-client function over
fixed-size chunks of clients and scans over the chunks, adding each chunk's outputs to a
running sum, so peak memory depends on the chunk size, not on the cohort size, and one
compile serves any round. With a mesh, the cohort is split over the mesh's devices
(`shard_map`), each device reduces its share the same way, and a `psum` adds the
devices' partial sums: the cross-device reduction of the federated average.

Sums of unsigned integers wrap modulo 2^bits, which is exactly the ring arithmetic secure
aggregation needs.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

CLIENT_AXIS = "clients"


def _chunked(tree, n_chunks: int, chunk: int):
  return jax.tree.map(lambda a: a.reshape((n_chunks, chunk) + a.shape[1:]), tree)


def map_reduce(fn: Callable[..., tuple[Any, Any]], shared: Any, per_client: Any, *,
               chunk_size: int):
  """Sums `fn`'s first output over clients and stacks its second.

  Args:
    fn: `fn(shared, client) -> (summed, kept)` for ONE client; `summed` is added over
      all clients, `kept` (keep it small: scalars) is returned per client.
    shared: inputs every client sees (the global model, the population's data).
    per_client: pytree of arrays with the cohort on the leading axis; its size must be a
      multiple of `chunk_size`.
    chunk_size: clients vmapped together.

  Returns:
    `(sum over clients of summed, kept stacked [clients, ...])`.
  """
  leaves = jax.tree.leaves(per_client)
  if not leaves:
    raise ValueError("map_reduce needs at least one per-client array")
  m = leaves[0].shape[0]
  if chunk_size < 1 or m % chunk_size:
    raise ValueError(f"cohort of {m} clients is not a multiple of chunk_size={chunk_size}")
  n_chunks = m // chunk_size
  one = jax.tree.map(lambda a: a[0], per_client)
  summed_shape, _ = jax.eval_shape(fn, shared, one)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), summed_shape)
  if chunk_size == 1:
    # One client per step: no vmap at all, so per-client ops keep their unbatched
    # form (e.g. a convolution stays a plain convolution, not a grouped one).
    vfn = lambda sh, c: jax.tree.map(lambda a: a[None], fn(sh, jax.tree.map(
        lambda a: a[0], c)))
  else:
    vfn = jax.vmap(fn, in_axes=(None, 0))

  def body(acc, chunk):
    summed, kept = vfn(shared, chunk)
    acc = jax.tree.map(lambda a, s: a + s.sum(axis=0, dtype=a.dtype), acc, summed)
    return acc, kept

  total, kept = lax.scan(body, zeros, _chunked(per_client, n_chunks, chunk_size))
  kept = jax.tree.map(lambda a: a.reshape((m,) + a.shape[2:]), kept)
  return total, kept


def sharded_map_reduce(fn, shared, per_client, *, chunk_size: int, mesh: Mesh | None):
  """`map_reduce` with the cohort split over the devices of `mesh` (axis "clients").

  Each device reduces its clients in chunks; a `psum` over the mesh axis adds the
  partial sums, and the kept per-client outputs come back sharded like the cohort.
  With `mesh=None` this is plain `map_reduce` on one device.
  """
  if mesh is None:
    return map_reduce(fn, shared, per_client, chunk_size=chunk_size)

  def local(shared_, per_client_):
    total, kept = map_reduce(fn, shared_, per_client_, chunk_size=chunk_size)
    return lax.psum(total, CLIENT_AXIS), kept

  # check_vma=False: every client's computation starts from the replicated global
  # model and becomes device-varying inside nested scans (local steps, chunks); the
  # type check would need a pcast at each of those carries in client code.
  return jax.shard_map(
      local, mesh=mesh,
      in_specs=(P(), P(CLIENT_AXIS)),
      out_specs=(P(), P(CLIENT_AXIS)),
      check_vma=False,
  )(shared, per_client)


def client_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (default: all, every process)."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"num_devices must be in [1, {len(devices)}], got {num_devices}")
    devices = devices[:num_devices]
  return Mesh(devices, (CLIENT_AXIS,))


def padded_cohort_size(cohort: int, chunk_size: int, num_devices: int = 1) -> int:
  """The smallest multiple of `chunk_size * num_devices` that holds `cohort` clients."""
  unit = chunk_size * num_devices
  return -(-cohort // unit) * unit
