"""A tiny experiment through the real driver and the launch scripts' exits, in seconds.

Imported by the tests (`tiny_experiment`) and run as a process where a test needs one
(signals, a second process holding a workdir, the soak test):

    python tests/tiny_run_main.py WORKDIR --rounds=6 --checkpoint_every=3 \
        [--private] [--nan_clients=1,5] [--signal_at=2 --signal=SIGTERM] [--hold]
    python -m tiny_run_main --workdir=DIR --config.rounds=N ...   (a sweep's launcher)
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tests")):
  if path not in sys.path:
    sys.path.insert(0, path)

import numpy as np  # noqa: E402
import optax  # noqa: E402

from conftest import TinyMLP, tiny_population  # noqa: E402
from fedpriv import train  # noqa: E402
from fedpriv.config import Config, PrivacyConfig  # noqa: E402
from fedpriv.data.client_data import EvalData, FederatedDataset  # noqa: E402
from fedpriv.fedavg import FedAvg  # noqa: E402
from fedpriv.models.registry import Task  # noqa: E402

# The whole update-privacy stack with secure aggregation and its dropouts.
PRIVATE = dict(enabled=True, clip=0.5, bits=8, mask_ratio=0.5, secagg=True,
               noise="distributed", noise_multiplier=1.0, dropout=0.25, secagg_threshold=0.6)


class SignalAt:
  """Hook: sends this process `signum` while round `rnd` is being recorded, as a
  scheduler's preemption or a Ctrl-C would arrive in the middle of a run."""

  def __init__(self, rnd: int, signum: int):
    self.rnd, self.signum = rnd, signum

  def on_round(self, exp, state, metrics, rnd, evaluated):
    del exp, state, metrics, evaluated
    if rnd == self.rnd:
      os.kill(os.getpid(), self.signum)


def tiny_experiment(rounds=4, checkpoint_every=2, eval_every=1, private=False,  # or "central"
                    nan_clients=(), num_classes=3, learning_rate=0.1, target_epsilon=0.0,
                    num_clients=10, cohort=4) -> train.Experiment:
  if private == "central":  # the accountant without secure aggregation's host step
    privacy = PrivacyConfig(enabled=True, clip=0.5, noise="central", noise_multiplier=1.0)
  else:
    privacy = PrivacyConfig(**PRIVATE) if private else PrivacyConfig()
  if target_epsilon:
    privacy = PrivacyConfig(enabled=True, clip=0.5, noise="central",
                            target_epsilon=target_epsilon)
  if privacy.enabled:  # runs are compared with separate reference runs: seed-derived
    # noise (a secret noise key differs per run; tests/test_secret_noise.py tests it)
    privacy = dataclasses.replace(privacy, reproducible_noise=True)
  cfg = Config(num_clients=num_clients, clients_per_round=cohort, rounds=rounds,
               eval_every=eval_every, checkpoint_every=checkpoint_every,
               learning_rate=learning_rate, batch_size=4, chunk_size=2, privacy=privacy)
  pop = tiny_population([8] * num_clients, seed=4)
  if nan_clients:  # these clients' first example makes their update NaN
    x = pop.x.copy()
    x[list(nan_clients), 0, 0] = np.inf
    pop = pop._replace(x=x)
  task = Task("tiny", "classification", TinyMLP(num_classes), (4,))
  kw, hooks = {}, []
  if private or target_epsilon:
    from fedpriv.privacy import setup  # pylint: disable=import-outside-toplevel
    kw["uplink"], report = setup.build(cfg, task, num_clients)
    hooks.append(report)
  algo = FedAvg(task=task, client_optimizer=optax.sgd(learning_rate),
                server_optimizer=optax.sgd(1.0), clients_per_round=cohort, local_epochs=1,
                batch_size=4, chunk_size=2, **kw)
  test = EvalData(np.asarray(pop.x[0]), np.asarray(pop.y[0]), np.asarray(pop.mask[0]))
  data = FederatedDataset("tiny", pop, test, num_classes, "classification",
                          tuple(f"c{i}" for i in range(num_clients)))
  return train.Experiment(cfg, data, task, algo, hooks)


def main():
  parser = argparse.ArgumentParser(allow_abbrev=False)
  parser.add_argument("workdir", nargs="?")
  # As a sweep's launcher: `--workdir=... --config=... --config.rounds=...`.
  parser.add_argument("--workdir", dest="workdir_flag")
  parser.add_argument("--rounds", "--config.rounds", type=int, default=4)
  parser.add_argument("--checkpoint_every", "--config.checkpoint_every", type=int, default=2)
  parser.add_argument("--private", action="store_true")
  parser.add_argument("--nan_clients", default="")
  parser.add_argument("--signal_at", type=int, default=0)
  parser.add_argument("--signal", default="SIGTERM")
  parser.add_argument("--hold", action="store_true",
                      help="only hold the workdir's lock until killed")
  args, _ = parser.parse_known_args()
  args.workdir = args.workdir or args.workdir_flag
  if args.hold:
    train.claim(args.workdir)
    print("holding", flush=True)
    time.sleep(3600)
    return
  from launch.cli import run_experiment  # pylint: disable=import-outside-toplevel
  nan = tuple(int(c) for c in args.nan_clients.split(",") if c)
  exp = tiny_experiment(args.rounds, args.checkpoint_every, private=args.private,
                        nan_clients=nan)
  if args.signal_at:
    exp.hooks.append(SignalAt(args.signal_at, signal.Signals[args.signal]))
  run_experiment(exp, args.workdir)


if __name__ == "__main__":
  main()
