"""FedQSN's premise on the sentiment workload, with forward passes only.

After a short central fine-tune of all-MiniLM-L6-v2 (+ a fresh head) on the training
sentences, how accurate is the model on the test sentences as it is, under NF-b
quantization of its large matrices alone, under the server mask p1 alone (units of the
embedding output and of every attention/FFN output zeroed, the rest scaled by 1/(1-p1)),
and under both (FedQSN's proxy without the client mask)? If the premise holds, the full
model is accurate and the proxies fall toward chance.

    python -m launch.premise_lm --out=/tmp/premise.json [--labels=5bin] [--steps=150]

Masking the units through the weights that produce them (`fedqsn.masks.apply_mask`)
computes the same function as masking the activations, which is all a forward pass sees.
"""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from fedpriv import keys as keylib
from fedpriv import optimizers
from fedpriv.config import Config, ConfigError
from fedpriv.data import load_dataset
from fedpriv.data.client_data import EvalData
from fedpriv.evaluate import batch_eval_data, evaluate
from fedpriv.fedqsn import masks, nf_quant
from fedpriv.fedqsn.units import model_spec
from fedpriv.local import local_train
from fedpriv.models.registry import make_task
from fedpriv.schedule import client_batches
from launch.cli import parse_flags, refuse

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "where to write the JSON of results")
flags.DEFINE_enum("labels", "sign", ["sign", "5bin"], "rating labels")
flags.DEFINE_integer("steps", 150, "central fine-tuning steps")
flags.DEFINE_integer("batch_size", 32, "fine-tuning batch size")
flags.DEFINE_float("learning_rate", 5e-5, "AdamW peak rate (6% warm-up, linear decay)")
flags.DEFINE_integer("eval_examples", 1000, "test sentences evaluated (0 = all)")
flags.DEFINE_list("bits", ["2", "3", "4"], "NF bit widths")
flags.DEFINE_list("p1", ["0.3", "0.5"], "server mask ratios")
flags.DEFINE_integer("mask_seeds", 2, "server masks drawn per p1 (results averaged)")
flags.DEFINE_integer("seed", 0, "seed of data split, init, batches and masks")


def main(argv):
  if len(argv) > 1:
    refuse(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.out:
    refuse("--out is required")
  try:
    cfg = Config(dataset="sentiment", model="minilm", num_clients=1, clients_per_round=1,
                 seq_len=48, sentiment_labels=FLAGS.labels, client_optimizer="adamw",
                 learning_rate=FLAGS.learning_rate, weight_decay=0.01, lr_schedule="linear",
                 warmup_fraction=0.06, batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    data = load_dataset(cfg)
  except ConfigError as e:
    refuse(str(e))
  task = make_task("minilm", data.task, data.num_classes, data.train.x.shape[2:],
                   vocab=data.vocab)
  base = keylib.base_key(cfg.seed)
  params = task.init(keylib.init_key(base))
  spec = model_spec("minilm", params)
  n_eval = FLAGS.eval_examples or len(data.test.mask)
  test = batch_eval_data(EvalData(*(np.asarray(a)[:n_eval] for a in data.test)), 100)
  eval_fn = jax.jit(lambda p: evaluate(task, p, test))
  chance = float(np.bincount(data.test.y[:n_eval]).max() / n_eval)

  # Central fine-tune: one "client" holding every training sentence, `steps` steps of the
  # library's local training loop (AdamW, 6% warm-up, linear decay to 0).
  x, y, mask = (jnp.asarray(a[0]) for a in data.train)
  idx, valid = client_batches(jax.random.fold_in(base, 7), mask, 1, cfg.batch_size)
  steps = min(FLAGS.steps, idx.shape[0])
  opt = optimizers.client_optimizer(cfg, steps)
  t0 = time.perf_counter()
  tuned, _ = jax.jit(lambda p: local_train(task, opt, p, x, y, idx[:steps], valid[:steps]))(
      params)
  tuned = jax.block_until_ready(tuned)
  train_s = time.perf_counter() - t0

  results = {"labels": FLAGS.labels, "num_classes": data.num_classes, "steps": steps,
             "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
             "eval_examples": n_eval, "majority_class_accuracy": chance,
             "vocab_size": data.info["vocab_size"], "fine_tune_seconds": train_s, "rows": []}

  def record(name, p, **kw):
    ev = eval_fn(p)
    row = {"model": name, "accuracy": float(ev["accuracy"]), "loss": float(ev["loss"]), **kw}
    results["rows"].append(row)
    print(f"{name:28s} acc {row['accuracy']:.4f}  loss {row['loss']:.4f}", flush=True)

  record("pretrained, fresh head", params)
  record("fine-tuned (full)", tuned)
  bits = [int(b) for b in FLAGS.bits]
  p1s = [float(p) for p in FLAGS.p1]
  for b in bits:
    record(f"NF{b}", nf_quant.nf_quantize(tuned, spec, b, 64), bits=b)
  for p1 in p1s:
    for b in [32, *bits]:
      accs, losses = [], []
      for s in range(FLAGS.mask_seeds):
        keep = masks.server_mask(spec, jax.random.fold_in(base, 1000 + s), p1)
        proxy = nf_quant.nf_quantize(masks.apply_mask(tuned, spec, keep, masks.mask_scale(p1)),
                                     spec, b, 64)
        ev = eval_fn(proxy)
        accs.append(float(ev["accuracy"]))
        losses.append(float(ev["loss"]))
      name = f"mask p1={p1}" + (f" + NF{b}" if b != 32 else "")
      row = {"model": name, "accuracy": float(np.mean(accs)), "loss": float(np.mean(losses)),
             "p1": p1, "bits": b, "accuracy_per_mask": accs}
      results["rows"].append(row)
      print(f"{name:28s} acc {row['accuracy']:.4f}  loss {row['loss']:.4f}  "
            f"(per mask {', '.join(f'{a:.4f}' for a in accs)})", flush=True)
  with open(FLAGS.out, "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
