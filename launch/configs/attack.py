"""Attack presets (the attacked deployment is a Fashion-MNIST preset, under `train`).

    --config=launch/configs/attack.py              (= :inversion)
    --config=launch/configs/attack.py:inversion    gradient inversion, per defense
    --config=launch/configs/attack.py:membership   membership inference, with and without DP

Any key can be overridden, e.g. `--config.batch_sizes=1,4,8 --config.local_steps=1,5
--config.defenses=none,mask=0.9,bits=4,eps=8,secagg=4 --config.train.learning_rate=0.1`.
"""
import ml_collections

from launch.configs import base, fashion_mnist


def get_config(preset: str = "inversion") -> ml_collections.ConfigDict:
  from fedpriv.attacks.config import AttackConfig  # pylint: disable=import-outside-toplevel
  c = base.options(AttackConfig())  # kind "inversion"; see AttackConfig for every key
  # The deployment under attack: its model, data, client learning rate, and (for the
  # DP accountant) population, cohort and rounds.
  c.train = fashion_mnist.get_config()
  c.train.learning_rate = 0.1
  c.trials = 2
  if preset == "inversion":
    c.defenses = "none,mask=0.5,mask=0.9,bits=8,bits=4,eps=1000,eps=8,secagg=4"
  elif preset == "membership":
    c.kind = "membership"
    # Few clients, many local epochs: a model that overfits its clients' data.
    c.train.num_clients = 4
    c.train.clients_per_round = 4
    c.train.train_limit = 200
    c.train.test_limit = 2000
    c.train.rounds = 20
    c.train.local_epochs = 10
    c.train.batch_size = 10
    c.train.learning_rate = 0.05
    c.train.eval_every = 5
    c.defenses = "none,eps=100,eps=8"
  else:
    raise ValueError(f"unknown attack preset {preset!r}; use inversion or membership")
  return c
