"""A hand-written sequential PyTorch loop of the many-clients workload (a peer).

    PYTHONPATH=. .venv-torch/bin/python -m launch.peer_torch --model=cnn --params=init.npz

Runs in its own virtualenv (torch and numpy only; `launch.bench_peers` starts it).
Same clients, batches and initial weights as fedpriv (`launch/many_clients.py`): every
client copies the global weights into one reusable model, takes its SGD step(s), and
its weights are added to a running sum; the server divides by the cohort. Then the same
number of SGD steps of ONE model on batches gathered beforehand: the training step alone.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import numpy as np
import torch
from torch import nn

from fedpriv.data import fashion_mnist
from launch import many_clients as mc
from launch.bench_torch import CNN  # McMahan et al.'s CNN, as in the pinned benchmark


class SmallCNN(nn.Module):
  """Papernot et al. 2021's small CNN: tanh, two strided convs, dense 32."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 16, 8, stride=2, padding=3)
    self.conv2 = nn.Conv2d(16, 32, 4, stride=2)
    self.fc1 = nn.Linear(512, 32)
    self.fc2 = nn.Linear(32, 10)

  def forward(self, x):
    x = nn.functional.max_pool2d(torch.tanh(self.conv1(x)), 2, stride=1)
    x = nn.functional.max_pool2d(torch.tanh(self.conv2(x)), 2, stride=1)
    return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


MODELS = {"cnn": CNN, "small_cnn": SmallCNN}


def make_model(name: str, params_path: str, device) -> nn.Module:
  model = MODELS[name]()
  state = mc.to_torch_layout(name, mc.load_params(params_path))
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
  return model.to(device)


def _sync(device):
  if device.type == "cuda":
    torch.cuda.synchronize()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", default="cnn", choices=sorted(MODELS))
  parser.add_argument("--params", required=True)
  parser.add_argument("--cohort", type=int, default=mc.CLIENTS_PER_ROUND)
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--device", default=os.environ.get("FEDPRIV_TORCH_DEVICE", "cpu"))
  args = parser.parse_args()
  device = torch.device(args.device)
  torch.manual_seed(0)
  x, y = fashion_mnist.load("train")
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
  yt = torch.from_numpy(y.astype(np.int64)).to(device)
  parts = mc.partition(mc.population_size(args.cohort))
  glob = make_model(args.model, args.params, device)
  local = make_model(args.model, args.params, device)
  opt = torch.optim.SGD(local.parameters(), lr=mc.LR)  # SGD has no state to reset
  gparams, lparams = list(glob.parameters()), list(local.parameters())
  times, cpu, losses = [], [], []
  for rnd in range(1, args.rounds + 1):
    _, idx = mc.round_examples(parts, rnd, args.cohort)
    idx_t = torch.from_numpy(idx.astype(np.int64)).to(device)
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    total = [torch.zeros_like(p) for p in gparams]
    round_loss = []
    for i in range(args.cohort):
      with torch.no_grad():
        torch._foreach_copy_(lparams, gparams)
      for s in range(idx.shape[1]):
        b = idx_t[i, s]
        loss = nn.functional.cross_entropy(local(xt[b]), yt[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        round_loss.append(loss.detach())
      with torch.no_grad():
        torch._foreach_add_(total, lparams)
    with torch.no_grad():
      torch._foreach_copy_(gparams, torch._foreach_div(total, float(args.cohort)))
    mean_loss = float(torch.stack(round_loss).mean())
    _sync(device)
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
    losses.append(mean_loss)

  # The training steps alone: one model, the round's batches gathered beforehand.
  steps_wall, steps_cpu = [], []
  for rnd in range(1, max(args.rounds, 2) + 1):
    _, idx = mc.round_examples(parts, rnd, args.cohort)
    flat = torch.from_numpy(idx.reshape(-1, mc.BATCH).astype(np.int64)).to(device)
    xb, yb = xt[flat], yt[flat]
    one = make_model(args.model, args.params, device)
    sgd = torch.optim.SGD(one.parameters(), lr=mc.LR)
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(xb.shape[0]):
      loss = nn.functional.cross_entropy(one(xb[s]), yb[s])
      sgd.zero_grad(set_to_none=True)
      loss.backward()
      sgd.step()
    _sync(device)
    steps_wall.append(time.perf_counter() - t0)
    steps_cpu.append(time.process_time() - c0)
  after_first = lambda v: statistics.median(v[1:] or v)
  print(json.dumps({
      "peer": "torch", "model": args.model, "cohort": args.cohort, "rounds": args.rounds,
      "round_s": times, "round_cpu_s": cpu, "sec_per_round": after_first(times),
      "cpu_s_per_round": after_first(cpu), "train_loss": losses,
      "steps_alone_s": after_first(steps_wall), "steps_alone_cpu_s": after_first(steps_cpu),
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
      "torch": torch.__version__, "threads": torch.get_num_threads(),
      "device": str(device)}), flush=True)


if __name__ == "__main__":
  main()
