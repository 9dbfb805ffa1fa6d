"""Accuracy vs epsilon: the whole update-privacy stack (fashion_mnist.py:private) with
the noise calibrated to each target epsilon, and the non-private reference on the same
workload: the same clip and optimizer without noise, mask, codes or secure aggregation
(the server steps at learning rate 4 with momentum on the mean update, which the clip
keeps bounded). 240 rounds each, about 20 minutes a run on 2 CPU cores."""


def get_sweep():
  return {
      "config": "launch/configs/fashion_mnist.py:private",
      "grid": {"privacy.target_epsilon": [1.0, 2.0, 4.0, 8.0, 16.0]},
      "runs": {"no_noise": {"privacy.noise": "none", "privacy.target_epsilon": 0.0,
                             "privacy.secagg": False, "privacy.bits": 0,
                             "privacy.mask_ratio": 0.0}},
  }
