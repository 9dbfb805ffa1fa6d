"""The many-small-clients workload that fedpriv, a PyTorch loop and Flower all run.

Numpy only (every peer imports it, in its own virtualenv):

    Fashion-MNIST's 60,000 training images split IID into 6,000 clients of 10; round r
    samples 1,000 of them (uniformly, without replacement, from a numpy generator seeded
    by (seed, round)); each sampled client runs one local epoch of SGD with batch 10, so
    ONE step, on its 10 examples in an order fixed by (seed, round, client); the server
    takes the example-weighted mean of the trained models (all weights equal here).

A cohort larger than 6,000 (the GPU run's 10,000 clients per round) needs a larger
population: `partition(n)` then hands out the 60,000 images n*10/60,000 times over, each
pass a fresh permutation, so clients stay 10 examples and IID.

Two models: McMahan et al.'s CNN (`cnn`, 1.66M parameters, PyTorch-default init drawn by
`launch.workload.initial_params`) and the small private-training CNN of Papernot et al.
2021 ("Tempered Sigmoid Activations for Deep Learning with Differential Privacy"):
conv 8x8/2 16 filters, max-pool 2x2/1, conv 4x4/2 32 filters, max-pool 2x2/1, dense 32,
dense 10, tanh (`small_cnn`, 26,010 parameters). The initial weights are written once, in
flax layout, to one `.npz` that every peer loads; `to_torch_layout` converts them.
"""
from __future__ import annotations

import numpy as np

SEED = 0
TRAIN_EXAMPLES = 60_000
NUM_CLIENTS = 6_000
EXAMPLES_PER_CLIENT = 10
CLIENTS_PER_ROUND = 1_000
BATCH = 10
STEPS = EXAMPLES_PER_CLIENT // BATCH  # 1
LR = 0.05
MODELS = ("cnn", "small_cnn")


def population_size(cohort: int) -> int:
  """The population a cohort is drawn from: 6,000 clients, or the cohort if larger."""
  return max(NUM_CLIENTS, cohort)


def partition(num_clients: int = NUM_CLIENTS) -> np.ndarray:
  """`[num_clients, 10]` example indices; client k holds row k."""
  need = num_clients * EXAMPLES_PER_CLIENT
  passes = -(-need // TRAIN_EXAMPLES)
  perms = [np.random.default_rng([SEED, 10, p]).permutation(TRAIN_EXAMPLES)
           for p in range(passes)]
  return np.concatenate(perms)[:need].reshape(num_clients, EXAMPLES_PER_CLIENT)


def sampled_clients(rnd: int, cohort: int = CLIENTS_PER_ROUND,
                    num_clients: int | None = None) -> np.ndarray:
  """Sorted ids of round `rnd`'s clients (1-based rounds)."""
  n = num_clients or population_size(cohort)
  rng = np.random.default_rng([SEED, 11, rnd, cohort])
  return np.sort(rng.choice(n, cohort, replace=False)).astype(np.int32)


def local_batches(rnd: int, client: int) -> np.ndarray:
  """`[1, 10]` positions into the client's own 10 examples, in training order."""
  order = np.random.default_rng([SEED, 12, rnd, int(client)]).permutation(EXAMPLES_PER_CLIENT)
  return order.reshape(STEPS, BATCH).astype(np.int32)


def round_schedule(rnd: int, cohort: int = CLIENTS_PER_ROUND):
  """`(client ids [m], batch positions [m, 1, 10])` of round `rnd`."""
  ids = sampled_clients(rnd, cohort)
  return ids, np.stack([local_batches(rnd, c) for c in ids])


def round_examples(parts: np.ndarray, rnd: int, cohort: int = CLIENTS_PER_ROUND):
  """`(client ids [m], example indices [m, 1, 10])`: what each client trains on, in order."""
  ids, pos = round_schedule(rnd, cohort)
  return ids, np.take_along_axis(parts[ids][:, None, :], pos, axis=2)


# --- initial weights, shared as one .npz in flax layout ---------------------------------

def save_params(path: str, params: dict) -> None:
  flat = {f"{layer}/{name}": np.asarray(v, np.float32)
          for layer, leaves in params.items() for name, v in leaves.items()}
  np.savez(path, **flat)


def load_params(path: str) -> dict:
  out: dict = {}
  with np.load(path) as f:
    for key in f.files:
      layer, name = key.split("/")
      out.setdefault(layer, {})[name] = f[key]
  return out


# flax flattens NHWC (h, w, c) before the first dense layer, torch NCHW (c, h, w).
_FLATTEN = {"cnn": ("fc1", (7, 7, 64)), "small_cnn": ("fc1", (4, 4, 32))}


def to_torch_layout(model: str, params: dict) -> dict:
  """flax-layout params -> a PyTorch state dict's arrays (`layer.weight`, `layer.bias`)."""
  flat_layer, (h, w, c) = _FLATTEN[model]
  state = {}
  for layer, leaves in params.items():
    k = np.asarray(leaves["kernel"])
    if k.ndim == 4:  # HWIO -> OIHW
      k = k.transpose(3, 2, 0, 1)
    elif layer == flat_layer:  # [h*w*c, out] -> [out, c*h*w]
      k = k.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, h * w * c)
    else:
      k = k.T
    state[f"{layer}.weight"] = np.ascontiguousarray(k, np.float32)
    state[f"{layer}.bias"] = np.ascontiguousarray(leaves["bias"], np.float32)
  return state


def small_cnn_task(conv_impl: str = "im2col"):
  """Papernot et al. 2021's small CNN as a fedpriv Task: fedpriv's own `TemperedCNN`
  with tanh (what `tempered_cnn` trains), its strided convolutions as im2col matmuls
  (`conv_impl="xla"`: XLA's convolution, whose weight gradient is slow inside loops on
  XLA:CPU)."""
  from fedpriv.models.registry import Task  # pylint: disable=import-outside-toplevel
  from fedpriv.models.tempered_cnn import TemperedCNN  # pylint: disable=import-outside-toplevel
  return Task("small_cnn", "classification",
              TemperedCNN(num_classes=10, activation="tanh", conv_impl=conv_impl), (28, 28, 1))
