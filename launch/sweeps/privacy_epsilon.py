"""Accuracy vs epsilon: the whole update-privacy stack (fashion_mnist.py:private) with
the noise calibrated to each target epsilon, and FedAvg on the same workload."""


def get_sweep():
  return {
      "config": "launch/configs/fashion_mnist.py:private",
      "grid": {"privacy.target_epsilon": [1.0, 2.0, 4.0, 8.0, 16.0]},
      "runs": {"fedavg": {"privacy.enabled": False}},
  }
