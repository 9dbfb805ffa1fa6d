"""Accuracy vs uplink bits: the update-privacy stack (fashion_mnist.py:private, epsilon 4,
240 rounds, about 20 minutes a run on 2 CPU cores) at the quantizer widths of the
distributed-DP literature, with and without the 90% mask."""


def get_sweep():
  return {
      "config": "launch/configs/fashion_mnist.py:private",
      "grid": {"privacy.bits": [4, 6, 8, 12], "privacy.mask_ratio": [0.0, 0.9]},
  }
