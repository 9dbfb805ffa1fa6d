"""Flower's simulation engine (Ray backend, a PyTorch client) on the many-clients workload.

    PYTHONPATH=. .venv-flwr/bin/python -m launch.peer_flower --model=cnn --params=init.npz

Runs in its own virtualenv (`flwr[simulation]`, torch; `launch.bench_peers` starts it).
Same clients, batches and initial weights as fedpriv (`launch/many_clients.py`): the
simulation has one virtual SuperNode per client of the round; Flower's own message
FedAvg strategy sends the global model to all of them, and the message to node k also
names the client it trains this round (the round's k-th sampled client), so every peer
does the same work; replies are aggregated by Flower (example-weighted mean, all
weights 10 here). Each ClientApp times its training step alone (`compute_s`), so the
rest of a client's time is the framework's. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import time

import numpy as np

from launch import many_clients as mc

_CACHE: dict = {}


def _data(model: str, params: str, cohort: int):
  """Per worker process: the images, the partition and one reusable model."""
  if "x" not in _CACHE:
    import torch  # pylint: disable=import-outside-toplevel
    from fedpriv.data import fashion_mnist  # pylint: disable=import-outside-toplevel
    from launch.peer_torch import make_model  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(1)
    x, y = fashion_mnist.load("train")
    _CACHE["x"] = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    _CACHE["y"] = torch.from_numpy(y.astype(np.int64))
    _CACHE["parts"] = mc.partition(mc.population_size(cohort))
    _CACHE["model"] = make_model(model, params, torch.device("cpu"))
  return _CACHE


def client_app(model_name: str, params: str, cohort: int):
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict  # pylint: disable=import-outside-toplevel
  from flwr.clientapp import ClientApp  # pylint: disable=import-outside-toplevel

  app = ClientApp()

  @app.train()
  def train(msg, context):  # pylint: disable=unused-variable
    del context
    d = _data(model_name, params, cohort)
    config = msg.content["config"]
    client, rnd = int(config["client"]), int(config["server-round"])
    model = d["model"]
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=mc.LR)
    idx = torch.from_numpy(d["parts"][client][mc.local_batches(rnd, client)].astype(np.int64))
    t0 = time.perf_counter()
    losses = []
    for s in range(idx.shape[0]):
      loss = nn.functional.cross_entropy(model(d["x"][idx[s]]), d["y"][idx[s]])
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      losses.append(float(loss))
    compute = time.perf_counter() - t0
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"train_loss": float(np.mean(losses)), "compute_s": compute,
                                 "num-examples": mc.EXAMPLES_PER_CLIENT})})
    return Message(content=content, reply_to=msg)

  return app


def server_app(model_name: str, params: str, cohort: int, rounds: int, record: dict):
  from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict  # pylint: disable=import-outside-toplevel
  from flwr.serverapp import ServerApp  # pylint: disable=import-outside-toplevel
  from flwr.serverapp.strategy import FedAvg  # pylint: disable=import-outside-toplevel

  class PinnedFedAvg(FedAvg):
    """Flower's FedAvg, with each round's clients and their data fixed by the workload."""

    def configure_train(self, server_round, arrays, config, grid):
      record["start"][server_round] = time.perf_counter()
      nodes = sorted(grid.get_node_ids())[:cohort]
      clients = mc.sampled_clients(server_round, cohort)
      msgs = []
      for node, client in zip(nodes, clients):
        cfg = ConfigRecord({"server-round": server_round, "client": int(client)})
        msgs.append(Message(content=RecordDict({"arrays": arrays, "config": cfg}),
                            message_type=MessageType.TRAIN, dst_node_id=node))
      return msgs

    def aggregate_train(self, server_round, replies):
      out = super().aggregate_train(server_round, replies)
      record["end"][server_round] = time.perf_counter()
      record["metrics"][server_round] = dict(out[1]) if out[1] is not None else {}
      return out

  app = ServerApp()

  @app.main()
  def main(grid, context):  # pylint: disable=unused-variable
    del context
    import torch  # pylint: disable=import-outside-toplevel
    from launch.peer_torch import make_model  # pylint: disable=import-outside-toplevel
    init = make_model(model_name, params, torch.device("cpu")).state_dict()
    strategy = PinnedFedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                            min_train_nodes=cohort, min_available_nodes=cohort)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(init), num_rounds=rounds)

  return app


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", default="cnn", choices=mc.MODELS)
  parser.add_argument("--params", required=True)
  parser.add_argument("--cohort", type=int, default=mc.CLIENTS_PER_ROUND)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--num_cpus", type=float, default=1.0,
                      help="Ray CPUs per simulated client (1: one client per core).")
  args = parser.parse_args()
  import flwr  # pylint: disable=import-outside-toplevel
  from flwr.simulation import run_simulation  # pylint: disable=import-outside-toplevel
  logging.getLogger("flwr").setLevel(logging.WARNING)
  params = os.path.abspath(args.params)
  record = {"start": {}, "end": {}, "metrics": {}}
  t0 = time.perf_counter()
  run_simulation(server_app=server_app(args.model, params, args.cohort, args.rounds, record),
                 client_app=client_app(args.model, params, args.cohort),
                 num_supernodes=args.cohort, backend_name="ray",
                 backend_config={"client_resources": {"num_cpus": args.num_cpus,
                                                      "num_gpus": 0.0}})
  total = time.perf_counter() - t0
  rounds = sorted(record["end"])
  if len(rounds) != args.rounds:
    raise SystemExit(f"Flower finished {len(rounds)} of {args.rounds} rounds")
  times = [record["end"][r] - record["start"][r] for r in rounds]
  # Round 1 includes Ray's worker start-up; like the others, the median skips it.
  sec = statistics.median(times[1:] or times)
  compute = [record["metrics"][r].get("compute_s", float("nan")) for r in rounds]
  print(json.dumps({
      "peer": "flower", "model": args.model, "cohort": args.cohort, "rounds": args.rounds,
      "round_s": times, "sec_per_round": sec, "total_s": total,
      "train_loss": [record["metrics"][r].get("train_loss", float("nan")) for r in rounds],
      # Mean per-client seconds of the training step, measured inside the ClientApp:
      "steps_alone_s": statistics.median(compute[1:] or compute) * args.cohort,
      "num_cpus_per_client": args.num_cpus,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
      "flwr": flwr.__version__}), flush=True)


if __name__ == "__main__":
  main()
