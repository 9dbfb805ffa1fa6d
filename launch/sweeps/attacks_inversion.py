"""Gradient inversion per defense at batch sizes 1 to 8 (single step and 5 local steps):
one launch.attack run per local-step count."""


def get_sweep():
  return {
      "module": "launch.attack",
      "config": "launch/configs/attack.py:inversion",
      "overrides": {"batch_sizes": "1,2,4,8", "trials": 2},
      "grid": {"local_steps": [1, 5]},
  }
