"""FedAvg, FedProx, SCAFFOLD and the adaptive server optimizers on Fashion-MNIST with
Dirichlet(0.1) label skew (docs/results/algorithms.md). Small enough for a shared
2-core CPU: 20 clients of at most 60 images, 5 per round, 2 local epochs, 12 rounds."""


def get_sweep():
  return {
      "config": "launch/configs/fashion_mnist.py",
      "overrides": {"partition": "dirichlet", "dirichlet_alpha": 0.1, "num_clients": 20,
                    "clients_per_round": 5, "max_examples_per_client": 60,
                    "local_epochs": 2, "rounds": 12, "eval_every": 2,
                    "test_limit": 1000, "checkpoint_every": 4},
      "runs": {
          "fedavg": {},
          "scaffold": {"algorithm": "scaffold"},
          "fedprox": {"algorithm": "fedprox", "prox_mu": 0.1},
          "fedyogi": {"server_optimizer": "yogi", "server_learning_rate": 0.01},
          "fedadam": {"server_optimizer": "adam", "server_learning_rate": 0.01},
      },
  }
