"""FedAvg on Fashion-MNIST: the client learning rate (docs/results/fedavg.md's sweep)."""


def get_sweep():
  return {
      "config": "launch/configs/fashion_mnist.py",
      "overrides": {"eval_every": 5},
      "grid": {"learning_rate": [0.05, 0.1, 0.2, 0.3]},
  }
