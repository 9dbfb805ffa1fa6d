"""FedQSN's parts of an experiment, built in data-flow order by `train.build` when
`cfg.fedqsn.enabled`:

    downlink = build_downlink(cfg, task)                      # proxies down
    uplink, hooks = build(cfg, data, downlink, private=...)   # what comes back; metrics

`build_downlink` comes first because everything after it depends on it: the uplink
(which coordinates each client saw), update privacy's ledger (the proxy's bits are the
downlink's cost) and the hooks. With p1 = p2 = 0 and bits = upload_bits = 32 the round
is plain FedAvg from the same (pretrained) start.

With update privacy on as well (`cfg.privacy.enabled`), `private` is the private uplink
`privacy.setup.build` made (given the downlink's bits); it goes behind
`PrivateProxyUplink` (coverage-normalised decode) instead of FedQSN's own uplink."""
from __future__ import annotations

import dataclasses

import jax

from fedpriv import keys as keylib
from fedpriv import optimizers
from fedpriv.config import Config, ConfigError
from fedpriv.fedqsn.aggregation import FedQSNUplink
from fedpriv.fedqsn.hooks import FedQSNMetrics
from fedpriv.fedqsn.pretrain import Pretrain
from fedpriv.fedqsn.private_uplink import PrivateProxyUplink
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import embedding_leaves, model_spec


def build_downlink(cfg: Config, task) -> FedQSNDownlink:
  """The proxy downlink of `cfg.fedqsn` (raises ConfigError for a model without units)."""
  q = cfg.fedqsn
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  try:
    spec = model_spec(cfg.model, shapes)
    if q.quantize_embeddings:
      tables = embedding_leaves(shapes)
      if not tables:
        raise ConfigError("fedqsn.quantize_embeddings",
                          f"model {cfg.model!r} has no embedding tables")
      spec = dataclasses.replace(spec, quantized=spec.quantized | tables)
    return FedQSNDownlink.make(spec, shapes, keylib.base_key(cfg.seed), p1=q.p1, p2=q.p2,
                               client_mask=q.client_mask, bits=q.bits,
                               block_size=q.block_size)
  except ValueError as e:
    raise ConfigError("fedqsn" if "count_of_all" in str(e) else "model", str(e)) from None


def build(cfg: Config, data, downlink: FedQSNDownlink, private=None):
  """The uplink for clients holding `downlink`'s proxies, and FedQSN's driver hooks.

  Args:
    cfg: the run's config (`cfg.fedqsn`).
    data: the `FederatedDataset` (server pretraining needs its `server` data).
    downlink: from `build_downlink`.
    private: the private uplink when update privacy is on (Config has already refused
      aggregation "average" and upload_bits < 32 with it), else None.

  Returns:
    `(uplink, hooks)`: hooks in the order the driver must call them (pretraining first).
  """
  q = cfg.fedqsn
  if private is not None:
    uplink = PrivateProxyUplink.make(private, downlink)
  else:
    uplink = FedQSNUplink.make(downlink, q.aggregation, q.upload_bits)
  hooks = []
  if q.pretrain_epochs:
    if data.server is None:
      raise ConfigError("fedqsn.server_fraction", "pretraining needs server data; "
                        f"{cfg.dataset} gave the server none")
    # Pretraining is one long run, not a client's round: a constant rate.
    pre_cfg = dataclasses.replace(cfg, learning_rate=q.pretrain_learning_rate,
                                  lr_schedule="constant", warmup_fraction=0.0)
    recipe = {"optimizer": cfg.client_optimizer, "learning_rate": q.pretrain_learning_rate,
              "momentum": cfg.client_momentum, "weight_decay": cfg.weight_decay}
    hooks.append(Pretrain(optimizers.client_optimizer(pre_cfg), q.pretrain_epochs,
                          q.pretrain_batch_size, recipe, q.pretrain_cache_dir))
  hooks.append(FedQSNMetrics(q.eval_examples))
  return uplink, hooks
