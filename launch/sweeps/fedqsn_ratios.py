"""Protection gap vs FedQSN's server mask p1, client mask p2 and bits b
(fashion_mnist.py:fedqsn; p1 = p2 = 0, bits 32 is FedAvg from the same pretrained start)."""


def get_sweep():
  return {
      "config": "launch/configs/fashion_mnist.py:fedqsn",
      "overrides": {"fedqsn.pretrain_cache_dir": "runs/pretrain_cache"},
      "grid": {"fedqsn.p1": [0.0, 0.3, 0.5, 0.8], "fedqsn.p2": [0.0, 0.2],
               "fedqsn.bits": [4, 32]},
  }
