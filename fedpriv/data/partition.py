"""Split a centralized dataset into clients: IID, or Dirichlet(alpha) label skew.

Partitions are lists of integer index arrays, one per client, disjoint and drawn from
a numpy generator seeded by `(seed, tag)`: the same seed gives the same partition on
every machine. (Naturally federated data, such as Shakespeare's speaking roles, comes
partitioned from its loader.)
"""
from __future__ import annotations

import numpy as np

_TAG_IID = 101
_TAG_DIRICHLET = 102
_TAG_CAP = 103
_TAG_HOLDOUT = 104


def holdout(num_examples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits `range(num_examples)` into a seeded random `fraction` and the rest.

  Returns:
    `(held, rest)`, sorted, disjoint, together every index; `held` has
    round(fraction * num_examples) indices.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
  n_held = int(round(fraction * num_examples))
  perm = np.random.default_rng([seed, _TAG_HOLDOUT]).permutation(num_examples)
  return np.sort(perm[:n_held]), np.sort(perm[n_held:])


def iid(num_examples: int, num_clients: int, seed: int) -> list[np.ndarray]:
  """A uniformly random split into `num_clients` near-equal parts."""
  if not 1 <= num_clients <= num_examples:
    raise ValueError(f"num_clients must be in [1, {num_examples}], got {num_clients}")
  perm = np.random.default_rng([seed, _TAG_IID]).permutation(num_examples)
  return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int,
              min_examples: int = 1, max_tries: int = 100) -> list[np.ndarray]:
  """Label-skewed split (Hsu et al. 2019): each class spread over clients by Dir(alpha).

  Small alpha gives each client few classes; large alpha approaches IID. The draw is
  repeated (with the same generator, so still deterministic) until every client holds
  at least `min_examples` examples.
  """
  labels = np.asarray(labels)
  if alpha <= 0:
    raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
  if not 1 <= num_clients <= len(labels) // max(min_examples, 1):
    raise ValueError(f"num_clients={num_clients} is too many for {len(labels)} examples")
  rng = np.random.default_rng([seed, _TAG_DIRICHLET])
  classes = np.unique(labels)
  for _ in range(max_tries):
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in classes:
      idx = rng.permutation(np.flatnonzero(labels == c))
      share = rng.dirichlet(np.full(num_clients, alpha))
      cuts = (np.cumsum(share)[:-1] * len(idx)).astype(np.int64)
      for k, chunk in enumerate(np.split(idx, cuts)):
        parts[k].append(chunk)
    out = [np.sort(np.concatenate(p)) for p in parts]
    if min(len(p) for p in out) >= min_examples:
      return out
  raise ValueError(f"could not give every one of {num_clients} clients {min_examples} "
                   f"example(s) with alpha={alpha} in {max_tries} draws; use fewer clients "
                   "or a larger alpha")


def cap(parts: list[np.ndarray], max_examples: int, seed: int) -> list[np.ndarray]:
  """Keeps a seeded random subset of at most `max_examples` examples per client."""
  rng = np.random.default_rng([seed, _TAG_CAP])
  out = []
  for p in parts:
    if len(p) > max_examples:
      p = np.sort(rng.choice(p, max_examples, replace=False))
    out.append(p)
  return out
