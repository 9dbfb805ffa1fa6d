"""Attack presets (the attacked deployment is a Fashion-MNIST preset, under `train`).

    --config=launch/configs/attack.py              (= :inversion)
    --config=launch/configs/attack.py:inversion    gradient inversion, per defense
    --config=launch/configs/attack.py:membership   membership inference, with and without DP

Any key can be overridden, e.g. `--config.batch_sizes=1,4,8 --config.local_steps=1,5
--config.defenses=none,mask=0.9,bits=4,eps=8,secagg=4 --config.train.learning_rate=0.1`.
"""
import ml_collections

from launch.configs import fashion_mnist


def get_config(preset: str = "inversion") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.kind = "inversion"
  # The deployment under attack: its model, data, client learning rate, and (for the
  # DP accountant) population, cohort and rounds.
  c.train = fashion_mnist.get_config()
  c.train.learning_rate = 0.1
  c.defenses = "none"
  c.clip = 1.0
  c.delta = 1e-5
  c.seed = 0
  # Inversion.
  c.batch_sizes = "1"
  c.local_steps = "1"
  c.trials = 2
  c.pool = 1000
  c.labels = "recover"
  c.head = "fc2"
  c.attack_steps = 300
  c.attack_learning_rate = 0.1
  c.tv_weight = 1e-2
  c.restarts = 1
  c.log_every = 50
  # Membership inference.
  c.nonmembers = 5000
  c.shadow_models = 0
  c.fpr = 0.001
  c.alpha = 0.05
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
