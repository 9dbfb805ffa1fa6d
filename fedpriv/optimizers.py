"""Client and server optimizers from a config."""
from __future__ import annotations

import optax

from fedpriv.config import Config


def client_optimizer(cfg: Config) -> optax.GradientTransformation:
  lr = cfg.learning_rate
  if cfg.client_optimizer == "sgd":
    opt = optax.sgd(lr)
  elif cfg.client_optimizer == "momentum":
    opt = optax.sgd(lr, momentum=cfg.client_momentum)
  elif cfg.client_optimizer == "adam":
    opt = optax.adam(lr)
  else:
    opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
  if cfg.weight_decay and cfg.client_optimizer != "adamw":
    opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)
  return opt


def server_optimizer(cfg: Config) -> optax.GradientTransformation:
  """Applied to the negated mean client update; sgd(1.0) is plain FedAvg."""
  lr = cfg.server_learning_rate
  if cfg.server_optimizer == "sgd":
    return optax.sgd(lr)
  if cfg.server_optimizer == "momentum":
    return optax.sgd(lr, momentum=0.9)
  return optax.adam(lr, b1=0.9, b2=0.99, eps=1e-3)  # FedAdam (Reddi et al. 2021)
