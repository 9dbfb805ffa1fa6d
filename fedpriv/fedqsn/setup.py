"""Turns an `Experiment` into a FedQSN experiment (called by `train.build` when
`cfg.fedqsn.enabled`): the proxy downlink, the FedQSN uplink, server pretraining and the
protection metrics. With p1 = p2 = 0 and bits = upload_bits = 32 the round is plain
FedAvg from the same (pretrained) start.

With update privacy on as well (`cfg.privacy.enabled`), `train.build` has already made
the private uplink; it is kept, behind `PrivateProxyUplink` (updates mapped back to the
model's scale before the privacy chain), and the privacy ledger counts the proxy's bits
as the downlink."""
from __future__ import annotations

import dataclasses

import jax

from fedpriv import keys as keylib
from fedpriv import optimizers
from fedpriv.config import ConfigError
from fedpriv.fedqsn.aggregation import FedQSNUplink
from fedpriv.fedqsn.hooks import FedQSNMetrics
from fedpriv.fedqsn.pretrain import Pretrain
from fedpriv.fedqsn.private_uplink import PrivateProxyUplink
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import model_spec


def attach_fedqsn(exp):
  """Returns `exp` with FedQSN's downlink, uplink and hooks (see the module doc)."""
  cfg, q = exp.cfg, exp.cfg.fedqsn
  shapes = jax.eval_shape(exp.task.init, jax.random.key(0))
  try:
    spec = model_spec(cfg.model, shapes)
  except ValueError as e:
    raise ConfigError("model", str(e)) from None
  downlink = FedQSNDownlink.make(spec, shapes, keylib.base_key(cfg.seed), p1=q.p1, p2=q.p2,
                                 client_mask=q.client_mask, bits=q.bits,
                                 block_size=q.block_size)
  privacy_hooks = []
  if cfg.privacy.enabled:
    # Config already refused aggregation "average" and upload_bits < 32 here.
    uplink = PrivateProxyUplink.make(exp.algorithm.uplink, downlink)
    from fedpriv.privacy.setup import PrivacyReport  # pylint: disable=import-outside-toplevel
    for hook in exp.hooks:
      if isinstance(hook, PrivacyReport):  # the ledger counts the proxy as the downlink
        hook.downlink_bits_per_param = downlink.bits_per_param
        privacy_hooks.append(hook)
  else:
    uplink = FedQSNUplink.make(downlink, q.aggregation, q.upload_bits)
  algorithm = dataclasses.replace(exp.algorithm, downlink=downlink, uplink=uplink)
  hooks = []
  if q.pretrain_epochs:
    if exp.data.server is None:
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
  # The privacy report runs last, so summary.json's downlink_bits_per_param is the
  # ledger's (the proxy plus secure aggregation's messages).
  others = [h for h in exp.hooks if h not in privacy_hooks]
  return dataclasses.replace(exp, algorithm=algorithm, hooks=[*others, *hooks, *privacy_hooks])
