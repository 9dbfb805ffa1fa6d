"""What a FedQSN proxy costs to send: a real byte encoding and its exact bit count.

The message a client receives (the client knows the model's shapes, `bits` and
`block_size`; nothing else is implicit):

1. For every unit group, in `spec.groups` order: one bit per unit (1 = the unit is in the
   proxy). A dropped unit's column and bias entry are all zero and are not sent.
2. For every parameter leaf, in `leaf_names` order, only its visible columns (all columns
   for leaves without units):
   - a quantized leaf (bits < 32): the float32 scale of every block of every visible
     column, then the level indices of the column's `fan_in` real values, packed `g` at a
     time in base `2^bits + 1` into words of `w` bits (`code_word`; b=2: 3 codes in 7 bits);
   - any other leaf: its visible values as float32.
3. Zero bits up to a whole byte, at the very end.

`message_bits` counts these bits with jnp ops (so the downlink can report the cost of
every client's proxy inside jit); `encode`/`decode` build and read the actual bytes
(numpy, host side), and the tests check that `len(encode(...))` is the count rounded up to
a byte and that `decode(encode(proxy)) == proxy` exactly.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fedpriv.fedqsn import nf_quant
from fedpriv.fedqsn.units import ModelSpec, leaf_name

FLOAT_BITS = 32


@functools.lru_cache(maxsize=None)
def code_word(bits: int) -> tuple[int, int]:
  """`(g, w)`: pack `g` level indices (base 2^bits + 1) into one `w`-bit word.

  The group size with the fewest bits per code among words of at most 64 bits (ties: the
  smaller group).
  """
  base = 2 ** bits + 1
  best = None
  for g in range(1, 65):
    w = (base ** g - 1).bit_length()
    if w > 64:
      break
    if best is None or w * best[0] < best[1] * g:
      best = (g, w)
  return best


def _shapes(params) -> list[tuple[str, tuple]]:
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return [(leaf_name(p), tuple(x.shape)) for p, x in flat]


def message_bits(spec: ModelSpec, params, visible_units: dict, bits: int, block_size: int,
                 bitmaps: bool = True):
  """Exact size in bits of the message carrying a proxy (before the final byte padding).

  Args:
    spec: the model's units and quantized leaves.
    params: the model (or its shapes): only shapes are read.
    visible_units: `{group: number of units in the proxy}` (ints, or traced int32).
    bits: NF bits, or 32 for no quantization.
    block_size: values per block.
    bitmaps: count the unit bitmaps (False for an upload: the server knows the masks).

  Returns:
    int32 scalar (exact up to ~2^31 bits).
  """
  total = jnp.int32(sum(n for _, n in spec.groups) if bitmaps else 0)
  for name, shape in _shapes(params):
    out = shape[-1] if shape else 1
    fan_in = int(np.prod(shape[:-1])) if shape else 1
    group = spec.group_of(name)
    cols = jnp.asarray(visible_units[group], jnp.int32) if group else jnp.int32(out)
    if name in spec.quantized and bits != nf_quant.NO_QUANTIZATION:
      g, w = code_word(bits)
      nb = nf_quant.num_blocks(fan_in, block_size)
      total += cols * (nb * FLOAT_BITS) + (cols * fan_in + g - 1) // g * w
    else:
      total += cols * fan_in * FLOAT_BITS
  return total


def bits_per_param(spec: ModelSpec, params, visible_units: dict, bits: int,
                   block_size: int, bitmaps: bool = True):
  n = sum(int(np.prod(s)) for _, s in _shapes(params))
  return message_bits(spec, params, visible_units, bits, block_size, bitmaps) / n


# --- The bytes themselves (numpy, host side) ----------------------------------------------


def _uint_bits(values: np.ndarray, width: int) -> np.ndarray:
  """Big-endian `width`-bit fields of unsigned ints, as a flat 0/1 uint8 array."""
  v = np.asarray(values, dtype=np.uint64).astype(">u8")
  bits = np.unpackbits(v.view(np.uint8).reshape(-1, 8), axis=1)
  return bits[:, 64 - width:].reshape(-1)


def _read_uint(stream: np.ndarray, pos: int, count: int, width: int):
  chunk = stream[pos:pos + count * width].reshape(count, width)
  padded = np.zeros((count, 64), np.uint8)
  padded[:, 64 - width:] = chunk
  values = np.packbits(padded, axis=1).view(">u8").reshape(-1).astype(np.uint64)
  return values, pos + count * width


def _pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
  g, w = code_word(bits)
  base = np.uint64(2 ** bits + 1)
  codes = np.asarray(codes, np.uint64).reshape(-1)
  n_words = -(-len(codes) // g)
  padded = np.zeros(n_words * g, np.uint64)
  padded[:len(codes)] = codes
  words = np.zeros(n_words, np.uint64)
  for i in reversed(range(g)):  # word = sum_i code_i * base^i (Horner, no overflow)
    words = words * base + padded[i::g]
  return _uint_bits(words, w)


def _unpack_codes(stream, pos, count, bits):
  g, w = code_word(bits)
  base = np.uint64(2 ** bits + 1)
  n_words = -(-count // g)
  words, pos = _read_uint(stream, pos, n_words, w)
  codes = np.zeros((n_words, g), np.uint64)
  for i in range(g):
    codes[:, i] = words % base
    words = words // base
  return codes.reshape(-1)[:count].astype(np.int64), pos


def _float_bits(x: np.ndarray) -> np.ndarray:
  return _uint_bits(np.asarray(x, np.float32).reshape(-1).view(np.uint32), FLOAT_BITS)


def _read_floats(stream, pos, count):
  values, pos = _read_uint(stream, pos, count, FLOAT_BITS)
  return values.astype(np.uint32).view(np.float32), pos


def _codes_of(cols: np.ndarray, bits: int, block_size: int):
  """Level indices `[n_cols, fan_in]` and block scales `[n_cols, blocks]` of NF values.

  `cols` holds already-quantized values (`[fan_in, n_cols]`); their block absmax is the
  scale exactly, so dividing by it recovers each level up to an ulp.
  """
  fan_in, n_cols = cols.shape
  nb = nf_quant.num_blocks(fan_in, block_size)
  padded = np.zeros((n_cols, nb * block_size), np.float32)
  padded[:, :fan_in] = cols.T
  blocks = padded.reshape(n_cols, nb, block_size)
  scales = np.abs(blocks).max(axis=-1)
  safe = np.where(scales > 0, scales, np.float32(1.0))
  levels = nf_quant.nf_levels(bits)
  midpoints = (levels[1:] + levels[:-1]) / np.float32(2)
  codes = np.searchsorted(midpoints, blocks / safe[..., None])
  return codes.reshape(n_cols, -1)[:, :fan_in], scales


def encode(proxy, keep: dict, spec: ModelSpec, bits: int, block_size: int) -> tuple[bytes, int]:
  """The proxy's message as bytes, and its length in bits before the final padding.

  Args:
    proxy: the proxy a client receives (quantized leaves must already be NF-b values).
    keep: the client's mask `{group: 0/1 vector}`.
    spec, bits, block_size: as for the downlink that built the proxy.
  """
  keep = {g: np.asarray(v) > 0 for g, v in keep.items()}
  parts = [np.asarray(keep[g], np.uint8) for g, _ in spec.groups]
  flat = jax.tree_util.tree_flatten_with_path(proxy)[0]
  for path, x in flat:
    name = leaf_name(path)
    x = np.asarray(x, np.float32)
    out = x.shape[-1] if x.ndim else 1
    cols = x.reshape(-1, out)
    group = spec.group_of(name)
    if group is not None:
      cols = cols[:, keep[group]]
    if name in spec.quantized and bits != nf_quant.NO_QUANTIZATION:
      codes, scales = _codes_of(cols, bits, block_size)
      parts.append(_float_bits(scales))
      parts.append(_pack_codes(codes, bits))
    else:
      parts.append(_float_bits(cols))
  stream = np.concatenate(parts)
  return np.packbits(stream).tobytes(), int(stream.size)


def decode(blob: bytes, template, spec: ModelSpec, bits: int, block_size: int):
  """Reads a message back into a proxy shaped like `template`; returns `(proxy, keep)`."""
  stream = np.unpackbits(np.frombuffer(blob, np.uint8))
  pos = 0
  keep = {}
  for group, n in spec.groups:
    keep[group] = stream[pos:pos + n].astype(bool)
    pos += n
  flat, treedef = jax.tree_util.tree_flatten_with_path(template)
  leaves = []
  for path, t in flat:
    name = leaf_name(path)
    shape = tuple(t.shape)
    out = shape[-1] if shape else 1
    fan_in = int(np.prod(shape[:-1])) if shape else 1
    group = spec.group_of(name)
    col_ids = np.flatnonzero(keep[group]) if group is not None else np.arange(out)
    cols = np.zeros((fan_in, out), np.float32)
    if name in spec.quantized and bits != nf_quant.NO_QUANTIZATION:
      nb = nf_quant.num_blocks(fan_in, block_size)
      scales, pos = _read_floats(stream, pos, len(col_ids) * nb)
      codes, pos = _unpack_codes(stream, pos, len(col_ids) * fan_in, bits)
      levels = nf_quant.nf_levels(bits)
      scales = scales.reshape(len(col_ids), nb)
      per_value = np.repeat(scales, block_size, axis=1)[:, :fan_in]
      values = levels[codes.reshape(len(col_ids), fan_in)] * per_value
      cols[:, col_ids] = values.T
    else:
      values, pos = _read_floats(stream, pos, len(col_ids) * fan_in)
      cols[:, col_ids] = values.reshape(fan_in, len(col_ids))
    leaves.append(cols.reshape(shape))
  if math.ceil(pos / 8) != len(blob):
    raise ValueError(f"message has {len(blob)} bytes, the layout reads {pos} bits")
  return jax.tree_util.tree_unflatten(treedef, leaves), keep
