"""A federated population as padded, stacked arrays with clients on the leading axis.

Every client holds up to `max_examples` examples; shorter clients are padded and an
example mask says which rows are real. Shapes never depend on which clients a round
samples, so one compiled round function serves the whole run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np


class ClientData(NamedTuple):
  """Stacked client datasets.

  Attributes:
    x: `[clients, max_examples, *feature_shape]` inputs.
    y: `[clients, max_examples, *label_shape]` targets.
    mask: `[clients, max_examples]` bool, True where the example is real.
  """
  x: Any
  y: Any
  mask: Any

  @property
  def num_clients(self) -> int:
    return int(self.mask.shape[0])

  @property
  def max_examples(self) -> int:
    return int(self.mask.shape[1])

  def num_examples(self):
    """Per-client example counts (the FedAvg weights), `[clients]` int32."""
    return self.mask.sum(axis=1).astype(np.int32)


class EvalData(NamedTuple):
  """A centralized evaluation set: `x [N, ...]`, `y [N, ...]`, `mask [N]`."""
  x: Any
  y: Any
  mask: Any


@dataclasses.dataclass(frozen=True)
class FederatedDataset:
  """What a task needs: the clients' training data and a held-out test set.

  Attributes:
    name: dataset name as given in the config (e.g. "fashion_mnist").
    train: the federated training population.
    test: the global test set (the union of the clients' test splits for
      naturally federated data).
    num_classes: number of output classes (vocabulary size for text).
    task: "classification" (one label per example) or "next_token" (a label per
      position, 0 = padding).
    client_names: a human-readable name per client (e.g. "hamlet/HAMLET").
    client_groups: per client, the group it belongs to (the play for
      Shakespeare), used to hold whole groups out of the federation.
    info: free-form facts about the data (sizes, vocabulary) for reports.
    server: optional training data held by the server alone (e.g. for FedQSN's server
      pretraining); never part of any client's data.
    validation: optional held-out evaluation set for model selection (FedQSN reports
      each model at the round with the lowest validation loss); disjoint from `test`
      and from every client's and the server's data. A loader that has one sets it;
      where it is None, FedQSN's metrics carve a seeded share of `test` instead (see
      `fedqsn/hooks.py`).
    vocab: for token ids taken from a pretrained model's larger vocabulary, the
      original id of each id used here (`x` holds positions in `vocab`); None when
      the ids are the model's own.
  """
  name: str
  train: ClientData
  test: EvalData
  num_classes: int
  task: str
  client_names: tuple[str, ...]
  client_groups: tuple[str, ...] = ()
  info: dict = dataclasses.field(default_factory=dict)
  server: EvalData | None = None
  validation: EvalData | None = None
  vocab: Any = None

  def select_clients(self, ids: Sequence[int]) -> "FederatedDataset":
    """The same dataset restricted to the clients `ids` (in that order)."""
    ids = np.asarray(ids, dtype=np.int64)
    train = ClientData(*(np.asarray(a)[ids] for a in self.train))
    names = tuple(self.client_names[i] for i in ids)
    groups = tuple(self.client_groups[i] for i in ids) if self.client_groups else ()
    return dataclasses.replace(self, train=train, client_names=names, client_groups=groups)


def pack_clients(x: np.ndarray, y: np.ndarray, client_indices: Sequence[np.ndarray],
                 max_examples: int | None = None) -> ClientData:
  """Gathers `x[idx], y[idx]` for every client and pads them to one shape.

  Args:
    x: `[N, ...]` inputs of the whole pool.
    y: `[N, ...]` targets of the whole pool.
    client_indices: one integer index array per client (its examples, in order).
    max_examples: pad to this many examples (default: the largest client).
      Clients larger than this are refused; cap them before packing.

  Returns:
    A `ClientData` with numpy arrays.
  """
  if not client_indices:
    raise ValueError("pack_clients needs at least one client")
  sizes = [len(i) for i in client_indices]
  width = max(sizes) if max_examples is None else int(max_examples)
  if max(sizes) > width:
    raise ValueError(f"a client has {max(sizes)} examples, more than max_examples={width}")
  if min(sizes) == 0:
    raise ValueError("a client has no examples; every client needs at least one")
  n = len(client_indices)
  xs = np.zeros((n, width) + x.shape[1:], dtype=x.dtype)
  ys = np.zeros((n, width) + y.shape[1:], dtype=y.dtype)
  mask = np.zeros((n, width), dtype=bool)
  for c, idx in enumerate(client_indices):
    idx = np.asarray(idx, dtype=np.int64)
    xs[c, :len(idx)] = x[idx]
    ys[c, :len(idx)] = y[idx]
    mask[c, :len(idx)] = True
  return ClientData(xs, ys, mask)


def stack_eval(x: np.ndarray, y: np.ndarray) -> EvalData:
  return EvalData(np.asarray(x), np.asarray(y), np.ones((len(x),), dtype=bool))
