"""Shared fixtures: a tiny model and tiny populations, so tests compile in seconds."""
from __future__ import annotations

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from fedpriv.data.client_data import ClientData  # noqa: E402
from fedpriv.models.registry import Task  # noqa: E402


class TinyMLP(nn.Module):
  num_classes: int = 3

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(8, name="hidden")(x))
    return nn.Dense(self.num_classes, name="head")(x)


def tiny_task() -> Task:
  return Task("tiny", "classification", TinyMLP(), (4,))


def tiny_population(sizes, max_examples=None, seed=0) -> ClientData:
  """Clients with the given example counts, random 4-d inputs and 3 labels."""
  rng = np.random.default_rng(seed)
  width = max_examples or max(sizes)
  n = len(sizes)
  x = rng.normal(size=(n, width, 4)).astype(np.float32)
  y = rng.integers(0, 3, size=(n, width)).astype(np.int32)
  mask = np.arange(width)[None, :] < np.asarray(sizes)[:, None]
  x = np.where(mask[..., None], x, 0.0).astype(np.float32)
  y = np.where(mask, y, 0).astype(np.int32)
  return ClientData(x, y, mask)


@pytest.fixture
def task():
  return tiny_task()


def fmnist_available() -> bool:
  from fedpriv.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  return fashion_mnist.available()


requires_fmnist = pytest.mark.skipif(
    not fmnist_available(), reason="Fashion-MNIST is not installed (make data)")
