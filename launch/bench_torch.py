"""A hand-written sequential PyTorch loop of the pinned workload, the speed reference.

    make bench-torch      # creates .venv-torch with torch (CPU) and runs this

Same data, partition, client sample, batch order and initial weights as fedpriv's
benchmark (launch/workload.py, numpy only), so the per-round training losses must agree
with fedpriv's to about 4 digits. Prints one JSON line like launch.benchmark's sections.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
from torch import nn

from fedpriv.data import fashion_mnist
from launch import workload


class CNN(nn.Module):

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
    self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
    self.fc1 = nn.Linear(3136, 512)
    self.fc2 = nn.Linear(512, 10)

  def forward(self, x):
    x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
    x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
    return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def load_initial(model: CNN) -> None:
  p = workload.initial_params()  # flax layout; convert back to torch layout
  fc1 = p["fc1"]["kernel"].reshape(7, 7, 64, 512).transpose(3, 2, 0, 1).reshape(512, 3136)
  state = {
      "conv1.weight": p["conv1"]["kernel"].transpose(3, 2, 0, 1), "conv1.bias": p["conv1"]["bias"],
      "conv2.weight": p["conv2"]["kernel"].transpose(3, 2, 0, 1), "conv2.bias": p["conv2"]["bias"],
      "fc1.weight": fc1, "fc1.bias": p["fc1"]["bias"],
      "fc2.weight": p["fc2"]["kernel"].T, "fc2.bias": p["fc2"]["bias"],
  }
  model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  torch.manual_seed(0)
  x, y = fashion_mnist.load("train")
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  yt = torch.from_numpy(y.astype(np.int64))
  parts = workload.partition()
  glob = CNN()
  load_initial(glob)
  times, cpu, losses = [], [], []
  for rnd in range(1, args.rounds + 1):
    ids, pos = workload.round_schedule(rnd)
    t0, c0 = time.perf_counter(), time.process_time()
    states, round_loss = [], []
    for i, c in enumerate(ids):
      local = CNN()
      local.load_state_dict(glob.state_dict())
      opt = torch.optim.SGD(local.parameters(), lr=workload.LR)
      for step in range(pos.shape[1]):
        idx = torch.from_numpy(parts[c][pos[i, step]])
        loss = nn.functional.cross_entropy(local(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        round_loss.append(loss.item())
      states.append(local.state_dict())
    glob.load_state_dict({k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]})
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
    losses.append(float(np.mean(round_loss)))
  timed = times[1:] or times
  med = statistics.median(timed)
  print(json.dumps({
      "section": "torch_loop", "rounds": args.rounds, "sec_per_round_median": med,
      "sec_per_round_min": min(timed), "sec_per_round_max": max(timed),
      "examples_per_sec": workload.EXAMPLES_PER_ROUND / med, "compile_s": 0.0,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
      "round_s": times, "cpu_s_per_round_median": statistics.median(cpu[1:] or cpu),
      "train_loss": losses, "torch": torch.__version__,
      "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
  main()
