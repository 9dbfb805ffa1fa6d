"""Federated datasets: loaders, partitioners and the padded client arrays."""
from __future__ import annotations

import dataclasses

import numpy as np

from fedpriv.config import Config, ConfigError
from fedpriv.data import fashion_mnist, partition, sentiment, shakespeare, tfds_images
from fedpriv.data.client_data import (ClientData, EvalData, FederatedDataset, pack_clients,
                                      stack_eval)
from fedpriv.data.fashion_mnist import DataNotFoundError


_TAG_SERVER_PLAYS = 302


def server_fraction(cfg: Config) -> float:
  """Share of the training data the server holds back for itself (FedQSN pretraining)."""
  return cfg.fedqsn.server_fraction if cfg.fedqsn.enabled else 0.0


def _partition_images(cfg: Config, name: str, x, y, x_test, y_test, num_classes: int):
  server = None
  fraction = server_fraction(cfg)
  if fraction:
    held, rest = partition.holdout(len(x), fraction, cfg.seed)
    if not len(held):
      raise ConfigError("fedqsn.server_fraction", f"holds no example of {len(x)}")
    server = stack_eval(x[held], y[held])
    x, y = x[rest], y[rest]
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
  if server is not None:
    info["server_examples"] = int(len(server.mask))
  return FederatedDataset(name=name, train=train, test=stack_eval(x_test, y_test),
                          num_classes=num_classes, task="classification",
                          client_names=tuple(f"client{k}" for k in range(len(parts))),
                          info=info, server=server)


def _server_plays(cfg: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """`(client plays, server plays)`: a seeded `server_fraction` of the plays for the server."""
  plays = shakespeare.play_names()
  fraction = server_fraction(cfg)
  if not fraction:
    return (), ()
  k = int(round(fraction * len(plays)))
  if not 1 <= k < len(plays):
    raise ConfigError("fedqsn.server_fraction", f"must hold between 1 and {len(plays) - 1} "
                      f"of the {len(plays)} plays, got {k}")
  rng = np.random.default_rng([cfg.seed, _TAG_SERVER_PLAYS])
  held = set(rng.choice(plays, k, replace=False).tolist())
  return (tuple(p for p in plays if p not in held), tuple(p for p in plays if p in held))


def _shakespeare_server_data(cfg: Config, plays: tuple[str, ...]) -> EvalData:
  """Every window (train and test split alike) of the server's plays."""
  ds = shakespeare.load(seq_len=cfg.seq_len, min_chars=cfg.min_chars,
                        test_fraction=cfg.test_fraction, seed=cfg.seed, plays=plays)
  x = np.concatenate([ds.train.x[ds.train.mask], ds.test.x])
  y = np.concatenate([ds.train.y[ds.train.mask], ds.test.y])
  return stack_eval(x, y)


def _load_sentiment(cfg: Config) -> FederatedDataset:
  """Movie-review sentences, tokenized for MiniLM, split into train/validation/test; the
  training pool (less the server's share) is partitioned over the clients. The word
  embedding is pruned to the word pieces of the corpus (`FederatedDataset.vocab`)."""
  from fedpriv.models import minilm  # pylint: disable=import-outside-toplevel
  try:
    texts, y = sentiment.load_movies(cfg.data_dir or None, cfg.sentiment_labels)
    ids = minilm.tokenize(texts, cfg.seq_len)
  except (DataNotFoundError, minilm.WeightsNotFoundError) as e:
    raise ConfigError("dataset", str(e)) from None
  try:
    tr, va, te = sentiment.split(len(y), cfg.test_fraction, cfg.validation_fraction, cfg.seed)
  except ValueError as e:
    raise ConfigError("test_fraction", str(e)) from None
  if cfg.train_limit:
    tr = tr[:cfg.train_limit]
  if cfg.test_limit:
    te, va = te[:cfg.test_limit], va[:cfg.test_limit]
  vocab = minilm.used_vocabulary(ids[tr], ids[va], ids[te])
  x_tr, x_va, x_te = (minilm.remap(ids[i], vocab) for i in (tr, va, te))
  ds = _partition_images(cfg, "sentiment", x_tr, y[tr], x_te, y[te],
                         sentiment.num_classes(cfg.sentiment_labels))
  validation = stack_eval(x_va, y[va]) if len(va) else None
  ds.info.update(validation_examples=int(len(va)), vocab_size=int(len(vocab)),
                 seq_len=cfg.seq_len, labels=cfg.sentiment_labels,
                 truncated=int((ids[:, -1] != minilm.PAD_ID).sum()))
  return dataclasses.replace(ds, validation=validation, vocab=vocab)


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
  if cfg.dataset == "sentiment":
    return _load_sentiment(cfg)
  if cfg.dataset == "shakespeare":
    try:
      client_plays, held_plays = _server_plays(cfg)
      ds = shakespeare.load(seq_len=cfg.seq_len, min_chars=cfg.min_chars,
                            test_fraction=cfg.test_fraction,
                            max_examples_per_client=cfg.max_examples_per_client,
                            seed=cfg.seed, plays=client_plays)
      if held_plays:
        server = _shakespeare_server_data(cfg, held_plays)
        ds = FederatedDataset(**{**ds.__dict__, "server": server})
        ds.info.update(server_plays=list(held_plays), server_examples=int(len(server.mask)))
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
