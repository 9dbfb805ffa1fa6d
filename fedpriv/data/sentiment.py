"""Movie-review sentiment: Hutto & Gilbert's (ICWSM 2014) Rotten Tomatoes snippets.

`movieReviewSnippets_GroundTruth.txt` holds 10,605 sentences from Rotten Tomatoes reviews
(Pang & Lee's sentence polarity corpus, the source of SST) with the mean of human ratings
on [-4, 4]. Labels: "sign" gives 1 for a positive mean and 0 for a negative one (the
exact zeros are dropped); "5bin" cuts the mean at -2, -0.5, 0.5, 2 into five classes
(very negative .. very positive; zeros kept, in the middle class).

The file ships in `additional_resources/hutto_ICWSM_2014.tar.gz` of the sdist
`vaderSentiment==3.3.2` (MIT); `make install` downloads that sdist by name and version and
unpacks the archive into `<venv>/share/fedpriv/`. $SENTIMENT_DIR (or `config.data_dir`)
points elsewhere: a folder holding `movieReviewSnippets_GroundTruth.txt`.
"""
from __future__ import annotations

import os
import pathlib
import sys

import numpy as np

from fedpriv.data.fashion_mnist import DataNotFoundError

MOVIES = "movieReviewSnippets_GroundTruth.txt"
INSTALL_HINT = ("run `make install` (it unpacks hutto_ICWSM_2014.tar.gz from the sdist "
                "vaderSentiment==3.3.2), or set SENTIMENT_DIR to a folder holding " + MOVIES)
LABELS = ("sign", "5bin")
_FIVE_BIN_EDGES = (-2.0, -0.5, 0.5, 2.0)


def default_dir() -> pathlib.Path:
  return pathlib.Path(sys.prefix) / "share" / "fedpriv" / "hutto_ICWSM_2014"


def data_dir(path: str | None = None) -> pathlib.Path:
  return pathlib.Path(path or os.environ.get("SENTIMENT_DIR") or default_dir())


def read_snippets(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
  """`(sentences, mean ratings)` from a `*_GroundTruth.txt` file (id TAB rating TAB text)."""
  texts, ratings = [], []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      line = line.rstrip("\r\n")
      if not line.strip():
        continue
      parts = line.split("\t", 2)
      if len(parts) != 3:
        raise ValueError(f"{path}:{n}: expected 'id<TAB>rating<TAB>text'")
      ratings.append(float(parts[1]))
      texts.append(parts[2].strip())
  return texts, np.asarray(ratings, dtype=np.float64)


def labels_from_ratings(ratings: np.ndarray, labels: str = "sign"):
  """`(keep, y)`: which ratings have a label, and the int32 labels of those."""
  ratings = np.asarray(ratings)
  if labels == "sign":
    keep = ratings != 0
    return keep, (ratings[keep] > 0).astype(np.int32)
  if labels == "5bin":
    return np.ones(len(ratings), bool), np.digitize(ratings, _FIVE_BIN_EDGES).astype(np.int32)
  raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")


def num_classes(labels: str) -> int:
  return {"sign": 2, "5bin": 5}[labels]


def load_movies(path: str | None = None, labels: str = "sign"):
  """`(sentences, labels)` of the movie-review snippets (in file order)."""
  file = data_dir(path) / MOVIES
  if not file.is_file():
    raise DataNotFoundError(f"{file} is missing: {INSTALL_HINT}")
  texts, ratings = read_snippets(file)
  keep, y = labels_from_ratings(ratings, labels)
  return [t for t, k in zip(texts, keep) if k], y


def split(n: int, test_fraction: float, validation_fraction: float, seed: int):
  """Seeded disjoint `(train, validation, test)` index arrays covering `range(n)`.

  Each array is in a random order (the file lists all positive sentences before the
  negative ones), so that its first k entries are a random sample of k.
  """
  order = np.random.default_rng([seed, 401]).permutation(n)
  n_test = int(round(test_fraction * n))
  n_val = int(round(validation_fraction * n))
  if n - n_test - n_val < 1:
    raise ValueError(f"test and validation fractions leave no training example of {n}")
  return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]
