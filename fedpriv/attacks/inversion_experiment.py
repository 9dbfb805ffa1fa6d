"""The gradient-inversion experiment: every defense x local steps x batch size.

For each setting and trial: draw the victim's batch (the same victims for every
defense, so rows compare), make the observation with one real FedAvg round
(`observe.py`), recover the labels from it (or take the true ones), invert
(`inversion.py`), match reconstructions to originals and score them. Writes, into the
workdir:

  attack.json        one flat object per setting: defense, batch_size, local_steps,
                     psnr, ssim (means over the victim images of all trials), ...
  images/NAME.png    originals (top) and matched reconstructions, first trial
  reconstructions.png  the first trial of every setting, one column each (when all
                     settings share one batch size, hence the same victims)
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from fedpriv import keys as keylib
from fedpriv import plots
from fedpriv.attacks import defenses as defense_lib
from fedpriv.attacks import image_metrics, inversion, labels as label_lib
from fedpriv.attacks.config import AttackConfig, parse_ints
from fedpriv.attacks.observe import observe, support_fraction
from fedpriv.config import ConfigError
from fedpriv.models.registry import make_task

_TAG_VICTIMS = 601
_TAG_ATTACKER = 602


def load_pool(train_cfg, count: int):
  """The first `count` training images of the deployment's dataset: `(x, y, classes)`."""
  from fedpriv.data import fashion_mnist, tfds_images  # pylint: disable=import-outside-toplevel
  data_dir = train_cfg.data_dir or None
  try:
    if train_cfg.dataset == "fashion_mnist":
      x, y = fashion_mnist.load("train", data_dir, count)
      return np.asarray(x), np.asarray(y), 10
    x, y, classes = tfds_images.load(train_cfg.dataset[len("tfds:"):], "train", data_dir,
                                     count)
    return np.asarray(x), np.asarray(y), classes
  except fashion_mnist.DataNotFoundError as e:
    raise ConfigError("train.dataset", str(e)) from None


def victims(pool_x, pool_y, seed: int, batch: int, trial: int, clients: int):
  """The victim's batch (first) and the other clients' of a sum: `[clients, batch, ...]`.

  Drawn without replacement from the pool by a generator seeded with (seed, batch,
  trial); the victim's images do not depend on `clients`, so every defense attacks the
  same victim.
  """
  rng = np.random.default_rng([seed, _TAG_VICTIMS, batch, trial])
  order = rng.permutation(len(pool_x))[:batch * clients]
  return (pool_x[order].reshape((clients, batch) + pool_x.shape[1:]),
          pool_y[order].reshape(clients, batch))


def attacker_key(seed: int, setting: int, trial: int) -> jax.Array:
  k = jax.random.fold_in(keylib.base_key(seed), _TAG_ATTACKER)
  return jax.random.fold_in(jax.random.fold_in(k, setting), trial)


def guess_labels(cfg: AttackConfig, update, support, shape) -> np.ndarray:
  head = update.get(cfg.head) if isinstance(update, dict) else None
  if head is None or "kernel" not in head:
    raise ConfigError("head", f"the model has no output layer {cfg.head!r} with a kernel "
                      f"(layers: {sorted(update)})")
  sup = support[cfg.head] if support is not None else {}
  scores = label_lib.class_scores(head["kernel"], head.get("bias"), sup.get("kernel"),
                                  sup.get("bias"))
  return label_lib.recover_labels(scores, int(np.prod(shape))).reshape(shape)


def setting_name(defense: str, batch: int, steps: int) -> str:
  safe = defense.replace("=", "").replace("+", "_").replace(".", "p")
  return f"{safe}_b{batch}_s{steps}"


def _atomic_json(path: pathlib.Path, obj) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1) + "\n")
  os.replace(tmp, path)


def run(cfg: AttackConfig, workdir, log=print) -> list[dict]:
  """Runs every setting; returns (and writes) the rows of attack.json."""
  workdir = pathlib.Path(workdir)
  train_cfg = cfg.train
  batch_sizes = parse_ints("batch_sizes", cfg.batch_sizes)
  local_steps = parse_ints("local_steps", cfg.local_steps)
  defense_list = cfg.defense_list
  # Refuse unusable defenses before any work.
  deployments = [defense_lib.deployment_config(train_cfg, d, cfg.clip, cfg.delta)
                 for d in defense_list]
  pool_x, pool_y, classes = load_pool(train_cfg, cfg.pool)
  if len(pool_x) < cfg.pool:
    raise ConfigError("pool", f"the dataset has only {len(pool_x)} training examples")
  shape = tuple(pool_x.shape[1:])
  task = make_task(train_cfg.model, "classification", classes, shape, conv_impl="im2col")
  params = task.init(keylib.init_key(keylib.base_key(train_cfg.seed)))
  uplinks = [defense_lib.build_uplink(dcfg, task) for dcfg in deployments]
  mean_image = pool_x.mean(0)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "images").mkdir(exist_ok=True)
  _atomic_json(workdir / "attack_config.json", cfg.to_dict())
  settings = inversion.InversionSettings(
      steps=cfg.attack_steps, learning_rate=cfg.attack_learning_rate,
      tv_weight=cfg.tv_weight, restarts=cfg.restarts, log_every=cfg.log_every)
  rows, overview, overview_labels = [], [], []
  total = len(defense_list) * len(local_steps) * len(batch_sizes)
  index = 0
  for d, dcfg, (uplink, mech) in zip(defense_list, deployments, uplinks):
    facts = defense_lib.describe(d, mech, dcfg.rounds)
    for steps in local_steps:
      for batch in batch_sizes:
        index += 1
        name = setting_name(d.name, batch, steps)
        log(f"[{index}/{total}] defense {d.name}, batch {batch}, local steps {steps}"
            + (f", epsilon {facts['epsilon']:.3g}" if "epsilon" in facts else ""))
        t0 = time.perf_counter()
        psnrs, ssims, label_accs, losses, first = [], [], [], [], None
        support_frac = 1.0
        for trial in range(cfg.trials):
          x, y = victims(pool_x, pool_y, cfg.seed, batch, trial, d.clients)
          obs = observe(task, params, x, y, uplink=uplink,
                        learning_rate=train_cfg.learning_rate, local_steps=steps,
                        seed=train_cfg.seed, round_index=trial + 1)
          support_frac = support_fraction(obs.support)
          if cfg.labels == "true":
            guess = y
          else:
            guess = guess_labels(cfg, obs.update, obs.support, y.shape)
          label_accs.append(label_lib.label_accuracy(guess.ravel(), y.ravel()))
          training = inversion.ClientTraining(train_cfg.learning_rate, steps, d.clients)
          result = inversion.invert(task, params, obs.update, guess,
                                    attacker_key(cfg.seed, index, trial), training,
                                    settings, shape, support=obs.support, log=log)
          recon = np.asarray(result.images).reshape((-1,) + shape)
          scores = image_metrics.compare(recon, x[0])
          psnrs.extend(scores["psnr"].tolist())
          ssims.extend(scores["ssim"].tolist())
          losses.append(result.loss)
          if first is None:
            first = (x[0], recon[scores["order"]])
        ref = image_metrics.compare(np.broadcast_to(mean_image, first[0].shape), first[0])
        row = {**facts, "batch_size": batch, "local_steps": steps, "trials": cfg.trials,
               "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
               "psnr_min": float(np.min(psnrs)), "psnr_max": float(np.max(psnrs)),
               "ssim_min": float(np.min(ssims)), "ssim_max": float(np.max(ssims)),
               "psnr_mean_image": float(ref["psnr"].mean()),
               "ssim_mean_image": float(ref["ssim"].mean()),
               "labels": cfg.labels, "label_accuracy": float(np.mean(label_accs)),
               "attack_loss": float(np.mean(losses)), "support_fraction": support_frac,
               "attack_steps": cfg.attack_steps, "tv_weight": cfg.tv_weight,
               "client_learning_rate": train_cfg.learning_rate,
               "seconds": time.perf_counter() - t0, "image": f"images/{name}.png"}
        rows.append(row)
        log(f"  psnr {row['psnr']:.2f} dB  ssim {row['ssim']:.3f}  labels "
            f"{row['label_accuracy']:.2f}  ({row['seconds']:.0f}s)")
        plots.save_image_grid(list(first), workdir / row["image"],
                              ["original", "recon."], title=name)
        if not overview:
          overview, overview_labels = [first[0]], ["original"]
        overview.append(first[1])
        overview_labels.append(f"{d.name}\n{steps} step{'s' if steps > 1 else ''}")
        _atomic_json(workdir / "attack.json", rows)
  if len({r["batch_size"] for r in rows}) == 1:  # same victims in every row
    columns = [np.asarray(c) for c in overview]  # one column per setting, a row per image
    plots.save_image_grid([np.stack([c[i] for c in columns]) for i in range(len(columns[0]))],
                          workdir / "reconstructions.png", col_labels=overview_labels,
                          scale=1.0)
  return rows
