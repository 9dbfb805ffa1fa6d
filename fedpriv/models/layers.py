"""Layers written for speed under `vmap` + `lax.scan` on XLA:CPU.

XLA:CPU runs a convolution's weight gradient inside a while loop (our local training
scan) through a slow generic emitter, and under `vmap` the convolution becomes a grouped
convolution with no fast path at all (see docs/results/performance.md). Two
formulations avoid both:

- "im2col": an explicit im2col (pad, k*k static slices, concat) followed by one matmul:
  XLA sees only slices and dots, which it fuses and batches well under `vmap`.
- "xla": XLA's own convolution for the forward pass and the input gradient (both fast,
  also inside loops), with the weight gradient computed by a custom VJP as one
  contraction per kernel row (the row's k column taps against dL/dY). Fastest when the convolution is NOT vmapped (one client at a time, or
  evaluation); under `vmap` it turns into a grouped convolution again.

Max-pooling by reshape + max avoids `reduce_window`, whose gradient
(select-and-scatter) is slow in loops too.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def im2col(x: jax.Array, kernel_size: int) -> jax.Array:
  """`[B, H, W, C] -> [B, H, W, k*k*C]` patches for a SAME, stride-1 convolution.

  The patch features are ordered (kh, kw, C), the row-major flattening of an HWIO
  kernel's first three axes, so `im2col(x, k) @ kernel.reshape(-1, O)` equals
  `lax.conv_general_dilated(x, kernel, (1, 1), "SAME", ("NHWC", "HWIO", "NHWC"))`.
  """
  if kernel_size % 2 != 1:
    raise ValueError(f"im2col supports odd kernel sizes only, got {kernel_size}")
  _, h, w, _ = x.shape
  r = kernel_size // 2
  xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
  taps = [xp[:, i:i + h, j:j + w, :] for i in range(kernel_size) for j in range(kernel_size)]
  return jnp.concatenate(taps, axis=-1)


_DN = ("NHWC", "HWIO", "NHWC")


def _xla_conv(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


def _weight_grad(x: jax.Array, g: jax.Array, k: int) -> jax.Array:
  """dL/dW `[k, k, C, O]` of a SAME, stride-1 convolution: for each kernel row, the k
  column taps of that row's shifted input against dL/dY, one contraction per row
  (a k-times smaller patch buffer than the full im2col's, and measurably faster)."""
  if k % 2 != 1:
    raise ValueError(f"conv_same supports odd kernel sizes only, got {k}")
  _, h, w, _ = x.shape
  r = k // 2
  xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
  rows = []
  for i in range(k):
    xi = xp[:, i:i + h]
    taps = jnp.stack([xi[:, :, j:j + w] for j in range(k)], axis=3)  # [B, H, W, k, C]
    rows.append(jnp.einsum("bhwjc,bhwo->jco", taps, g))
  return jnp.stack(rows)


@jax.custom_vjp
def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """SAME, stride-1 convolution (NHWC, HWIO) with an im2col weight gradient."""
  return _xla_conv(x, kernel)


def _conv_same_fwd(x, kernel):
  return _xla_conv(x, kernel), (x, kernel)


def _conv_same_bwd(res, g):
  x, kernel = res
  k, _, cin, cout = kernel.shape
  # dL/dW by contractions (XLA's own weight-gradient convolution is the slow path
  # inside loops).
  dw = _weight_grad(x, g, k)
  # dL/dX: the convolution of dL/dY with the flipped kernel, inputs and outputs swapped.
  dx = _xla_conv(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  return dx, dw


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def im2col_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  k, _, cin, cout = kernel.shape
  return jnp.einsum("bhwp,po->bhwo", im2col(x, k), kernel.reshape(k * k * cin, cout))


CONV_IMPLS = {"im2col": im2col_conv, "xla": conv_same}


class PatchConv(nn.Module):
  """A SAME, stride-1 2-D convolution computed as im2col + matmul.

  Parameters are named and shaped like `flax.linen.Conv` (`kernel` HWIO, `bias`), so
  checkpoints and initializations move freely between the two. `impl` picks the
  formulation ("im2col" or "xla", see the module docstring); both compute the same
  function with the same parameters.
  """
  features: int
  kernel_size: int = 5
  impl: str = "im2col"
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Any] = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (k, k, cin, self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    if self.impl not in CONV_IMPLS:
      raise ValueError(f"unknown conv impl {self.impl!r}; use one of {sorted(CONV_IMPLS)}")
    return CONV_IMPLS[self.impl](x, kernel) + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 2 by reshape (H and W must be even)."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"max_pool_2x2 needs even spatial dims, got {h}x{w}")
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
