"""Trains a FedQSN experiment and runs the model-extraction attacks on it.

    python -m launch.extract --config=launch/configs/fashion_mnist.py:fedqsn --workdir=DIR \
        [--attackers=3 --colluders=5 --epochs_factor=10] [--config.fedqsn.p1=0.8 ...]

Writes what `launch.train` writes, plus the attacks' results in summary.json
(`best_attacker_accuracy`, `training_alone_accuracy`, `attack_gap`, `attacks`) and in
attacks.json. The experiment must have FedQSN enabled (p1 = p2 = 0 and bits = 32 is
FedAvg from the same pretrained start).
"""
import json
import pathlib

from absl import app, flags

from launch.cli import (check_common, claim_existing_workdir, config_flag, parse_flags,
                        refuse, run_experiment, workdir_flag)

_CONFIG = config_flag()
_WORKDIR = workdir_flag()
_ATTACKERS = flags.DEFINE_integer("attackers", 3, "Clients of the final round that attack "
                                  "alone (last proxy; all proxies kept over the run).")
_COLLUDERS = flags.DEFINE_integer("colluders", 5, "k: clients of the final round that pool "
                                  "their proxies and data.")
_EPOCHS_FACTOR = flags.DEFINE_integer("epochs_factor", 10, "Attackers train this many times "
                                      "the clients' local epochs.")


def main(argv):
  check_common(argv, _CONFIG, "launch/configs/fashion_mnist.py:fedqsn", _WORKDIR)
  for flag in (_ATTACKERS, _COLLUDERS, _EPOCHS_FACTOR):
    if flag.value < 1:
      refuse(f"--{flag.name} must be >= 1, got {flag.value}")
  from fedpriv.config import Config, ConfigError  # pylint: disable=import-outside-toplevel
  from fedpriv import train  # pylint: disable=import-outside-toplevel
  from fedpriv.fedqsn.attacks import AttackHook  # pylint: disable=import-outside-toplevel
  try:
    cfg = Config.from_dict(_CONFIG.value.to_dict())
    claim_existing_workdir(_WORKDIR.value)
    if not cfg.fedqsn.enabled:
      raise ConfigError("fedqsn.enabled", "the attacks need a FedQSN experiment (use a "
                        ":fedqsn preset; p1=p2=0 and bits=32 is FedAvg)")
    if max(_ATTACKERS.value, _COLLUDERS.value) > cfg.clients_per_round:
      raise ConfigError("clients_per_round", f"must be >= --attackers and --colluders "
                        f"(attackers come from the final round), got {cfg.clients_per_round}")
    experiment = train.build(cfg)
  except ConfigError as e:
    refuse(str(e))
  hook = AttackHook(_ATTACKERS.value, _COLLUDERS.value, _EPOCHS_FACTOR.value)
  experiment.hooks.append(hook)
  run_experiment(experiment, _WORKDIR.value)
  path = pathlib.Path(_WORKDIR.value) / "attacks.json"
  path.write_text(json.dumps(hook.results, indent=1) + "\n")
  r = hook.results
  print(f"global {r['attack_global_accuracy']:.4f}  best attacker "
        f"{r['best_attacker_accuracy']:.4f}  training alone {r['training_alone_accuracy']:.4f}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
