"""Accuracy vs uplink bits: the update-privacy stack (fashion_mnist.py:private, epsilon 4)
at several quantizer widths and mask ratios."""


def get_sweep():
  return {
      "config": "launch/configs/fashion_mnist.py:private",
      "grid": {"privacy.bits": [8, 12, 16], "privacy.mask_ratio": [0.0, 0.9]},
  }
