"""The pinned peer-benchmark workload (FedAvg / Fashion-MNIST / McMahan CNN).

Reproduces, with numpy generators, the partition, per-round client sample, per-client
minibatch order and initial weights that every peer of the comparison uses, so that
fedpriv's per-round training losses can be checked against the others' (round 1:
2.1854, round 2: 1.5477) and its timings compared on the same work.

    100 IID clients of 600 examples; round r samples 10 clients; each runs one epoch of
    SGD (lr 0.05, batch 20, 30 steps) in an order fixed by (round, client); the server
    takes the example-weighted mean. PyTorch-default uniform initialization.
"""
from __future__ import annotations

import numpy as np

SEED = 0
NUM_CLIENTS = 100
EXAMPLES_PER_CLIENT = 600
CLIENTS_PER_ROUND = 10
BATCH = 20
LR = 0.05
STEPS = EXAMPLES_PER_CLIENT // BATCH  # 30
EXAMPLES_PER_ROUND = CLIENTS_PER_ROUND * EXAMPLES_PER_CLIENT
REFERENCE_LOSSES = {1: 2.1854, 2: 1.5477}  # mean client training loss, all peers agree


def partition() -> list[np.ndarray]:
  """Client k holds `perm.reshape(100, 600)[k]` of the 60,000 training images."""
  perm = np.random.default_rng(SEED).permutation(NUM_CLIENTS * EXAMPLES_PER_CLIENT)
  return list(perm.reshape(NUM_CLIENTS, EXAMPLES_PER_CLIENT))


def sampled_clients(rnd: int) -> np.ndarray:
  """Sorted ids of the clients of round `rnd` (1-based)."""
  rng = np.random.default_rng([SEED, 1, rnd])
  return np.sort(rng.choice(NUM_CLIENTS, CLIENTS_PER_ROUND, replace=False))


def local_batches(rnd: int, client: int) -> np.ndarray:
  """`[30, 20]` positions into the client's own 600 examples, in training order."""
  order = np.random.default_rng([SEED, 2, rnd, client]).permutation(EXAMPLES_PER_CLIENT)
  return order.reshape(STEPS, BATCH).astype(np.int32)


def round_schedule(rnd: int):
  """`(client ids [10], batch positions [10, 30, 20])` of round `rnd`."""
  ids = sampled_clients(rnd)
  return ids.astype(np.int32), np.stack([local_batches(rnd, int(c)) for c in ids])


_TORCH_SHAPES = (("conv1", (32, 1, 5, 5), (32,), 25), ("conv2", (64, 32, 5, 5), (64,), 800),
                 ("fc1", (512, 3136), (512,), 3136), ("fc2", (10, 512), (10,), 512))


def initial_params() -> dict:
  """PyTorch-default U(+-1/sqrt(fan_in)) weights drawn in torch layout, in flax layout."""
  rng = np.random.default_rng([SEED, 3])
  torch = {}
  for name, wshape, bshape, fan_in in _TORCH_SHAPES:
    bound = 1.0 / np.sqrt(fan_in)
    torch[name + ".weight"] = rng.uniform(-bound, bound, size=wshape).astype(np.float32)
    torch[name + ".bias"] = rng.uniform(-bound, bound, size=bshape).astype(np.float32)
  conv = lambda w: np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # OIHW -> HWIO
  # torch flattens NCHW (c, h, w); flax flattens NHWC (h, w, c).
  fc1 = torch["fc1.weight"].reshape(512, 64, 7, 7).transpose(2, 3, 1, 0).reshape(3136, 512)
  return {
      "conv1": {"kernel": conv(torch["conv1.weight"]), "bias": torch["conv1.bias"]},
      "conv2": {"kernel": conv(torch["conv2.weight"]), "bias": torch["conv2.bias"]},
      "fc1": {"kernel": np.ascontiguousarray(fc1), "bias": torch["fc1.bias"]},
      "fc2": {"kernel": np.ascontiguousarray(torch["fc2.weight"].T), "bias": torch["fc2.bias"]},
  }
