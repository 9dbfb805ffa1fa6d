"""Federated datasets: loaders, partitioners and the padded client arrays."""
from __future__ import annotations

import dataclasses

import numpy as np

from fedpriv.config import Config, ConfigError
from fedpriv.data import fashion_mnist, partition, shakespeare, tfds_images
from fedpriv.data.client_data import (ClientData, EvalData, FederatedDataset, pack_clients,
                                      stack_eval)
from fedpriv.data.fashion_mnist import DataNotFoundError


def _partition_images(cfg: Config, name: str, x, y, x_test, y_test, num_classes: int):
  if cfg.num_clients > len(x):
    raise ConfigError("num_clients", f"must be <= {len(x)} training examples, got "
                      f"{cfg.num_clients}")
  try:
    if cfg.partition == "iid":
      parts = partition.iid(len(x), cfg.num_clients, cfg.seed)
    else:
      parts = partition.dirichlet(y, cfg.num_clients, cfg.dirichlet_alpha, cfg.seed)
  except ValueError as e:
    raise ConfigError("num_clients", str(e)) from None
  if cfg.max_examples_per_client:
    parts = partition.cap(parts, cfg.max_examples_per_client, cfg.seed)
  train = pack_clients(x, y, parts)
  sizes = np.array([len(p) for p in parts])
  info = {"clients": len(parts), "train_examples": int(sizes.sum()),
          "test_examples": int(len(x_test)), "min_examples": int(sizes.min()),
          "max_examples": int(sizes.max())}
  return FederatedDataset(name=name, train=train, test=stack_eval(x_test, y_test),
                          num_classes=num_classes, task="classification",
                          client_names=tuple(f"client{k}" for k in range(len(parts))),
                          info=info)


def load_dataset(cfg: Config) -> FederatedDataset:
  """Loads and partitions the dataset a config names.

  Raises:
    ConfigError: the data is missing (the message says how to install it) or does
      not fit the config (e.g. more clients than examples or roles).
  """
  limit_tr = cfg.train_limit or None
  limit_te = cfg.test_limit or None
  if cfg.dataset == "fashion_mnist":
    try:
      x, y = fashion_mnist.load("train", cfg.data_dir or None, limit_tr)
      xt, yt = fashion_mnist.load("test", cfg.data_dir or None, limit_te)
    except DataNotFoundError as e:
      raise ConfigError("dataset", str(e)) from None
    return _partition_images(cfg, "fashion_mnist", x, y, xt, yt, 10)
  if cfg.dataset == "shakespeare":
    try:
      ds = shakespeare.load(seq_len=cfg.seq_len, min_chars=cfg.min_chars,
                            test_fraction=cfg.test_fraction,
                            max_examples_per_client=cfg.max_examples_per_client,
                            seed=cfg.seed)
    except DataNotFoundError as e:
      raise ConfigError("dataset", str(e)) from None
    except ValueError as e:
      raise ConfigError("min_chars", str(e)) from None
    available = ds.train.num_clients
    if cfg.num_clients > available:
      raise ConfigError("num_clients", f"shakespeare has {available} roles with at least "
                        f"min_chars={cfg.min_chars} characters; got {cfg.num_clients}")
    if cfg.clients_per_round > (cfg.num_clients or available):
      raise ConfigError("clients_per_round", f"must be <= {cfg.num_clients or available} "
                        f"clients, got {cfg.clients_per_round}")
    if cfg.num_clients and cfg.num_clients < available:
      keep = np.sort(np.random.default_rng([cfg.seed, 301]).choice(
          available, cfg.num_clients, replace=False))
      ds = ds.select_clients(keep)
      ds.info.update(clients=cfg.num_clients)
    if limit_te:
      ds = dataclasses.replace(ds, test=EvalData(*(np.asarray(a)[:limit_te] for a in ds.test)))
    return ds
  name = cfg.dataset[len("tfds:"):]
  try:
    x, y, num_classes = tfds_images.load(name, "train", cfg.data_dir or None, limit_tr)
    xt, yt, _ = tfds_images.load(name, "test", cfg.data_dir or None, limit_te)
  except Exception as e:  # tfds raises many kinds; the user needs the message
    raise ConfigError("dataset", f"cannot load tfds:{name}: {e}".splitlines()[0]) from None
  if x.shape[1] % 4 or x.shape[2] % 4:
    raise ConfigError("dataset", f"tfds:{name} images are {x.shape[1]}x{x.shape[2]}; the "
                      "CNN needs height and width divisible by 4")
  return _partition_images(cfg, cfg.dataset, x, y, xt, yt, num_classes)
