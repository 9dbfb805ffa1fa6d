"""The "CNN" of McMahan et al. 2017 (Communication-Efficient Learning of Deep Networks
from Decentralized Data): conv5x5-32, pool, conv5x5-64, pool, dense 512, dense classes.

For 28x28x1 inputs and 10 classes it has 1,663,370 parameters, as in the paper.
Parameter names (`conv1`, `conv2`, `fc1`, `fc2`) and layouts (HWIO kernels, NHWC
flattening) follow flax, so `nn.Conv`/`nn.Dense` checkpoints load as they are.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedpriv.models.layers import PatchConv, max_pool_2x2

# PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights, the
# initialization the FedAvg literature's CNN numbers were obtained with.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class CNN(nn.Module):
  """McMahan et al.'s CNN for small images (H and W divisible by 4)."""
  num_classes: int = 10
  conv_impl: str = "im2col"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    x = PatchConv(32, 5, self.conv_impl, torch_kernel_init, torch_bias_init(25 * cin),
                  name="conv1")(x)
    x = max_pool_2x2(nn.relu(x))
    x = PatchConv(64, 5, self.conv_impl, torch_kernel_init, torch_bias_init(25 * 32),
                  name="conv2")(x)
    x = max_pool_2x2(nn.relu(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(512, kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(x.shape[-1]), name="fc1")(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                    bias_init=torch_bias_init(512), name="fc2")(x)
