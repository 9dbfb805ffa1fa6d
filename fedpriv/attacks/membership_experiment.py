"""The membership-inference experiment: train the deployment per defense, attack its
final global model.

For each defense: train `train` (with the defense's privacy mechanism) through the
project's driver, keep the final global model (a driver hook), score the members (its
clients' training examples) and non-members (the next `nonmembers` examples of the same
split) with the loss-threshold attack and, with `shadow_models` > 0, a shadow-model
attack; when the mechanism adds noise, check the DP bound on the measured ROC with the
epsilon the run's own accountant reported. Writes, into the workdir:

  membership.json   one flat object per defense: defense, auc, tpr_at_0.1%fpr, ...,
                    epsilon, bound check fields
  roc.png           the loss-threshold ROC of every defense (log-log), with DP bounds
  models/NAME/...   the training runs (metrics.jsonl, summary.json)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time

import jax
import numpy as np

from fedpriv import plots
from fedpriv import train as train_lib
from fedpriv.attacks import defenses as defense_lib
from fedpriv.attacks import dp_audit, membership
from fedpriv.attacks.config import AttackConfig
from fedpriv.attacks.inversion_experiment import setting_name
from fedpriv.config import ConfigError
from fedpriv.data import partition
from fedpriv.data.client_data import pack_clients


class _FinalModel:
  """Driver hook that keeps the final global model."""
  params = None

  def on_end(self, exp, state):
    del exp
    self.params = jax.device_get(state.params)
    return {}


def _split(cfg: AttackConfig):
  """Train-split slices: target members, non-members, then per shadow (in, out)."""
  from fedpriv.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  n = cfg.train.train_limit
  total = n * (1 + 2 * cfg.shadow_models) + cfg.nonmembers
  try:
    x, y = fashion_mnist.load("train", cfg.train.data_dir or None, total)
  except fashion_mnist.DataNotFoundError as e:
    raise ConfigError("train.dataset", str(e)) from None
  nonmembers = (x[n:n + cfg.nonmembers], y[n:n + cfg.nonmembers])
  shadows, start = [], n + cfg.nonmembers
  for _ in range(cfg.shadow_models):
    shadows.append(((x[start:start + n], y[start:start + n]),
                    (x[start + n:start + 2 * n], y[start + n:start + 2 * n])))
    start += 2 * n
  return nonmembers, shadows


def _train(dcfg, workdir, log, train_data=None):
  """Trains one deployment; returns (final params, summary, experiment)."""
  exp = train_lib.build(dcfg)
  if train_data is not None:  # a shadow deployment: same config, other examples
    x, y = train_data
    parts = partition.iid(len(x), dcfg.num_clients, dcfg.seed)
    exp.data = dataclasses.replace(exp.data, train=pack_clients(x, y, parts))
  hook = _FinalModel()
  exp.hooks.append(hook)
  summary = train_lib.run(exp, workdir, log=log)
  return hook.params, summary, exp


def _members(exp):
  tr = exp.data.train
  mask = np.asarray(tr.mask)
  return np.asarray(tr.x)[mask], np.asarray(tr.y)[mask]


def _quiet(log):
  """The driver's round lines, indented; its closing table is left out."""
  def out(line, *a, **k):
    del a, k
    if line.startswith("round"):
      log("    " + line)
  return out


def run(cfg: AttackConfig, workdir, log=print) -> list[dict]:
  """Trains and attacks every defense; returns (and writes) the rows of membership.json."""
  workdir = pathlib.Path(workdir)
  deployments = [(d, defense_lib.deployment_config(cfg.train, d, cfg.clip, cfg.delta))
                 for d in cfg.defense_list]
  (xn, yn), shadow_data = _split(cfg)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "attack_config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
  rows, curves, bounds = [], {}, {}
  for i, (d, dcfg) in enumerate(deployments):
    t0 = time.perf_counter()
    name = setting_name(d.name, 0, 0).rsplit("_b0", 1)[0]
    log(f"[{i + 1}/{len(deployments)}] defense {d.name}: training the target model "
        f"({dcfg.num_clients} clients, {dcfg.rounds} rounds x {dcfg.local_epochs} local "
        "epochs)")
    params, summary, exp = _train(dcfg, workdir / "models" / name / "target", _quiet(log))
    xm, ym = _members(exp)
    fm = membership.output_features(exp.task, params, xm, ym)
    fn = membership.output_features(exp.task, params, xn, yn)
    curve = membership.roc(-fm[:, 0], -fn[:, 0])
    row = {"defense": d.name, "attack": "loss threshold",
           **membership.summarize(curve, (cfg.fpr, 0.01)),
           "test_accuracy": summary.get("test_accuracy"),
           "member_accuracy": float(fm[:, 3].mean()),
           "nonmember_accuracy": float(fn[:, 3].mean()),
           "member_loss": float(fm[:, 0].mean()), "nonmember_loss": float(fn[:, 0].mean())}
    eps = summary.get("epsilon")
    if eps is not None and math.isfinite(eps):
      row.update(epsilon=eps, delta=summary.get("delta", cfg.delta),
                 **dp_audit.check_bound(curve, eps, summary.get("delta", cfg.delta),
                                        cfg.alpha))
      bounds[d.name] = (eps, row["delta"])
    curves[f"{d.name} (AUC {row['auc']:.3f})"] = (curve.fpr, curve.tpr)
    log(f"  loss threshold: AUC {row['auc']:.3f}, TPR at {cfg.fpr:g} FPR "
        f"{row[f'tpr_at_{cfg.fpr * 100:g}%fpr']:.4f}, test accuracy "
        f"{row['test_accuracy']:.4f}" + (f", epsilon {eps:.3g}, DP bound holds: "
                                         f"{row['bound_holds']}" if "epsilon" in row else ""))
    if shadow_data:
      feats_in, feats_out = [], []
      for s, (data_in, data_out) in enumerate(shadow_data):
        log(f"  shadow model {s + 1}/{len(shadow_data)}")
        scfg = dataclasses.replace(dcfg, seed=dcfg.seed + 1 + s)
        sparams, _, sexp = _train(scfg, workdir / "models" / name / f"shadow{s}",
                                  _quiet(log), train_data=data_in)
        sx, sy = _members(sexp)
        feats_in.append(membership.output_features(sexp.task, sparams, sx, sy))
        feats_out.append(membership.output_features(sexp.task, sparams, *data_out))
      attack = membership.fit_logistic(np.concatenate(feats_in), np.concatenate(feats_out))
      scurve = membership.roc(attack.score(fm), attack.score(fn))
      shadow = membership.summarize(scurve, (cfg.fpr, 0.01))
      row.update({f"shadow_{k}": v for k, v in shadow.items()
                  if k not in ("members", "nonmembers")})
      row["shadow_models"] = len(shadow_data)
      if "epsilon" in row:
        check = dp_audit.check_bound(scurve, row["epsilon"], row["delta"], cfg.alpha)
        row["shadow_bound_holds"] = check["bound_holds"]
        row["shadow_epsilon_lower_bound"] = check["epsilon_lower_bound"]
      log(f"  shadow-model attack: AUC {row['shadow_auc']:.3f}")
    row["seconds"] = time.perf_counter() - t0
    rows.append(row)
    tmp = workdir / "membership.json.tmp"
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, workdir / "membership.json")
  plots.plot_roc(curves, workdir / "roc.png", "loss-threshold membership inference", bounds)
  return rows
