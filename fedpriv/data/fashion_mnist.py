"""Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist` package."""
from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = ("install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                "or point FMNIST_DIR at a folder holding the four IDX files")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataNotFoundError(FileNotFoundError):
  """A dataset's files are missing; the message says how to get them."""


def data_dir(path: str | None = None) -> pathlib.Path:
  return pathlib.Path(path or os.environ.get("FMNIST_DIR") or DEFAULT_DIR)


def read_idx(path: pathlib.Path) -> np.ndarray:
  """Reads an unsigned-byte IDX array (optionally gzipped)."""
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise ValueError(f"{path.name} is not an unsigned-byte IDX file")
  ndim = raw[3]
  dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise ValueError(f"{path.name}: header says {dims}, file holds {body.size} values")
  return body.reshape(dims)


def _find(folder: pathlib.Path, stem: str) -> pathlib.Path:
  for name in (stem + ".gz", stem):
    if (folder / name).exists():
      return folder / name
  raise DataNotFoundError(f"Fashion-MNIST file {stem}(.gz) not found in {folder}: {INSTALL_HINT}")


def available(path: str | None = None) -> bool:
  folder = data_dir(path)
  try:
    for stems in _FILES.values():
      for stem in stems:
        _find(folder, stem)
  except DataNotFoundError:
    return False
  return True


def load(split: str, path: str | None = None, limit: int | None = None):
  """Returns `(images, labels)` of a split.

  Args:
    split: "train" (60,000 images) or "test" (10,000).
    path: folder with the IDX files (default: $FMNIST_DIR or the Debian path).
    limit: keep only the first `limit` examples (for tests).

  Returns:
    images float32 `[N, 28, 28, 1]` in [0, 1] (pixels / 255), labels int32 `[N]`.
  """
  if split not in _FILES:
    raise ValueError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
  folder = data_dir(path)
  img_stem, lbl_stem = _FILES[split]
  images = read_idx(_find(folder, img_stem))
  labels = read_idx(_find(folder, lbl_stem))
  if images.shape[0] != labels.shape[0]:
    raise ValueError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
  if limit is not None:
    images, labels = images[:limit], labels[:limit]
  return (images.astype(np.float32)[..., None] / np.float32(255.0)), labels.astype(np.int32)
