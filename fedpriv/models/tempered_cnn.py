"""The small CNN of Papernot et al. 2021 (Tempered Sigmoid Activations for Deep Learning
with Differential Privacy, AAAI), their MNIST / Fashion-MNIST architecture for DP-SGD:

    conv 16 filters 8x8, stride 2, SAME  -> activation -> max-pool 2x2, stride 1
    conv 32 filters 4x4, stride 2, VALID -> activation -> max-pool 2x2, stride 1
    dense 32 -> activation -> dense classes

For 28x28x1 inputs: 28 -> 14 -> 13 -> 5 -> 4, so 4*4*32 = 512 features reach the dense
layer, and the model has 1,040 + 8,224 + 16,416 + 330 = 26,010 parameters.

The activation is the tempered sigmoid phi(x) = s * sigmoid(T x) - o (scale s, inverse
temperature T, offset o), bounded in (-o, s - o); (s, T, o) = (2, 2, 1) is exactly tanh,
the paper's choice for these datasets. Bounded activations keep the per-example gradient
norms small and stable, so clipping destroys less of the signal.

The convolutions are strided im2col (static strided slices, then one matmul), the
formulation that stays fast under `vmap` in a `lax.scan` on XLA:CPU (see
`fedpriv.models.layers`); "xla" uses XLA's own convolution, for evaluation.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Glorot-normal weights and zero biases, the defaults of `jax.example_libraries.stax`,
# the library the paper's JAX code was written with.
kernel_init = nn.initializers.glorot_normal()
bias_init = nn.initializers.zeros_init()


def tempered_sigmoid(x: jax.Array, scale: float = 2.0, inverse_temperature: float = 2.0,
                     offset: float = 1.0) -> jax.Array:
  """phi(x) = scale * sigmoid(inverse_temperature * x) - offset (Papernot et al., eq. 4)."""
  return scale * jax.nn.sigmoid(inverse_temperature * x) - offset


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow's SAME padding (before, after) for one spatial axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def strided_patches(x: jax.Array, kernel: int, stride: int, padding: str) -> jax.Array:
  """`[B, H, W, C] -> [B, Ho, Wo, k*k*C]` patches, features ordered (kh, kw, C) like a
  flattened HWIO kernel, so `patches @ kernel.reshape(-1, O)` is the convolution."""
  _, h, w, _ = x.shape
  if padding == "SAME":
    ph, pw = same_padding(h, kernel, stride), same_padding(w, kernel, stride)
    x = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
  elif padding != "VALID":
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
  _, hp, wp, c = x.shape
  ho, wo = (hp - kernel) // stride + 1, (wp - kernel) // stride + 1
  taps = [lax.slice(x, (0, i, j, 0),
                    (x.shape[0], i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                    (1, stride, stride, 1))
          for i in range(kernel) for j in range(kernel)]
  return jnp.concatenate(taps, axis=-1)


class StridedConv(nn.Module):
  """A strided 2-D convolution with `nn.Conv`'s parameter names and layouts (HWIO)."""
  features: int
  kernel_size: int
  stride: int
  padding: str
  impl: str = "im2col"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", kernel_init, (k, k, cin, self.features))
    bias = self.param("bias", bias_init, (self.features,))
    if self.impl == "im2col":
      y = strided_patches(x, k, self.stride, self.padding) @ kernel.reshape(-1, self.features)
    elif self.impl == "xla":
      pad = self.padding
      if pad == "SAME":  # TensorFlow's split, which XLA's "SAME" also uses; explicit here
        pad = [same_padding(x.shape[1], k, self.stride), same_padding(x.shape[2], k, self.stride)]
      y = lax.conv_general_dilated(x, kernel, (self.stride, self.stride), pad,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      raise ValueError(f"unknown conv impl {self.impl!r}; use 'im2col' or 'xla'")
    return y + bias


def max_pool_2x2_stride1(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 1, VALID: `[B, H, W, C] -> [B, H-1, W-1, C]`."""
  return jnp.maximum(jnp.maximum(x[:, :-1, :-1], x[:, 1:, :-1]),
                     jnp.maximum(x[:, :-1, 1:], x[:, 1:, 1:]))


class TemperedCNN(nn.Module):
  """Papernot et al.'s DP-SGD CNN for MNIST-sized images (see the module docstring).

  Attributes:
    num_classes: outputs of the last dense layer.
    activation: "tempered" (s * sigmoid(T x) - o with the three fields below), "tanh"
      or "relu" (the paper's baseline).
    conv_impl: "im2col" or "xla".
  """
  num_classes: int = 10
  activation: str = "tempered"
  scale: float = 2.0
  inverse_temperature: float = 2.0
  offset: float = 1.0
  conv_impl: str = "im2col"

  def act(self, x: jax.Array) -> jax.Array:
    if self.activation == "tempered":
      return tempered_sigmoid(x, self.scale, self.inverse_temperature, self.offset)
    if self.activation == "tanh":
      return jnp.tanh(x)
    if self.activation == "relu":
      return nn.relu(x)
    raise ValueError(f"unknown activation {self.activation!r}; use tempered, tanh or relu")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = StridedConv(16, 8, 2, "SAME", self.conv_impl, name="conv1")(x)
    x = max_pool_2x2_stride1(self.act(x))
    x = StridedConv(32, 4, 2, "VALID", self.conv_impl, name="conv2")(x)
    x = max_pool_2x2_stride1(self.act(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(32, kernel_init=kernel_init, bias_init=bias_init, name="fc1")(x)
    x = self.act(x)
    return nn.Dense(self.num_classes, kernel_init=kernel_init, bias_init=bias_init,
                    name="fc2")(x)
