"""Any tensorflow-datasets image-classification dataset, by name (`tfds:cifar10`).

Reads through `tfds.data_source` (random access over ArrayRecord files), which needs no
TensorFlow at read time. Preparing a dataset for the first time downloads it; users
without internet can point `data_dir` at an already prepared copy.
"""
from __future__ import annotations

import numpy as np


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - it is a dependency of fedpriv
    raise ImportError("tfds datasets need `pip install tensorflow-datasets`") from e
  return tfds


def info(name: str, data_dir: str | None = None) -> tuple[str, str, int]:
  """Returns `(image_key, label_key, num_classes)` of an image-classification dataset."""
  tfds = _tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises its own DatasetNotFoundError subclasses
    raise ValueError(f"tensorflow-datasets has no dataset {name!r}: {e}") from e
  keys = builder.info.supervised_keys
  if not keys or len(keys) != 2:
    raise ValueError(f"tfds:{name} has no (image, label) supervised keys")
  image_key, label_key = keys
  feats = builder.info.features
  if not hasattr(feats[label_key], "num_classes") or len(feats[image_key].shape) != 3:
    raise ValueError(f"tfds:{name} is not an image-classification dataset "
                     f"(features {image_key!r}, {label_key!r})")
  return image_key, label_key, int(feats[label_key].num_classes)


def load(name: str, split: str, data_dir: str | None = None, limit: int | None = None):
  """Returns `(images float32 [N, H, W, C] in [0, 1], labels int32 [N], num_classes)`."""
  tfds = _tfds()
  image_key, label_key, num_classes = info(name, data_dir)
  source = tfds.data_source(name, split=split, data_dir=data_dir)
  n = len(source) if limit is None else min(limit, len(source))
  if n == 0:
    raise ValueError(f"tfds:{name} split {split!r} is empty")
  records = [source[i] for i in range(n)]
  images = np.stack([np.asarray(r[image_key]) for r in records])
  labels = np.asarray([r[label_key] for r in records], dtype=np.int32)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / np.float32(255.0)
  return images.astype(np.float32), labels, num_classes
