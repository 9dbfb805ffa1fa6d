"""The FedQSN results sweep: trains every configuration of docs/results/fedqsn.md, runs
the extraction attacks on each, and writes the tables and the plot.

    python -m launch.sweep_fedqsn --dataset=fashion_mnist --out=runs/fedqsn
    python -m launch.sweep_fedqsn --dataset=shakespeare --out=runs/fedqsn
    python -m launch.sweep_fedqsn --dataset=sentiment --out=runs/fedqsn_lm
    python -m launch.sweep_fedqsn --dataset=fashion_mnist --set=rounds=10,num_clients=100
    python -m launch.sweep_fedqsn --report --out=runs/fedqsn --plot=docs/results/fedqsn.png

Each run is `python -m launch.extract --config=launch/configs/DATASET.py:fedqsn` with the
overrides below, in `OUT/DATASET/NAME`; a run whose summary.json already holds attack
results is skipped and an unfinished one resumes from its checkpoint, so an interrupted
sweep resumes (a second sweep on the same `--out` is refused). All runs share one pretrained model
per dataset (`OUT/pretrain_cache`). `--report` prints one markdown table per dataset
(also written to `OUT/DATASET.md`) and draws the plot.
"""
import json
import os
import pathlib
import sys
import time
from typing import Sequence

from absl import app, flags

from fedpriv.workdir import PREEMPTED_EXIT
from launch.cli import claim_folder, run_child

FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags (defined only when run as a script, so the functions here
  can be imported next to other launchers)."""
  flags.DEFINE_enum("dataset", None, ["fashion_mnist", "shakespeare", "sentiment"],
                    "Which sweep to run.")
  flags.DEFINE_string("out", "runs/fedqsn", "Folder for the runs.")
  flags.DEFINE_list("only", [], "Run only these configurations (names).")
  flags.DEFINE_bool("report", False, "Write the tables and the plot from finished runs.")
  flags.DEFINE_string("plot", "docs/results/fedqsn.png", "Where --report puts the plot.")
  flags.DEFINE_list("set", [], "Extra config overrides for every run, KEY=VALUE "
                    "(e.g. rounds=10,train_limit=20000): smaller sweeps.")

# name -> (what it is, fedqsn overrides). p1=p2=0 and bits=32 is FedAvg.
RUNS = {
    "fedavg": ("FedAvg", dict(p1=0.0, p2=0.0, bits=32)),
    "qsn_30_10_b4": ("FedQSN", dict(p1=0.3, p2=0.1, bits=4)),
    "qsn_50_20_b4": ("FedQSN", dict(p1=0.5, p2=0.2, bits=4)),
    "qsn_50_20_b4_avg": ("FedQSN", dict(p1=0.5, p2=0.2, bits=4, aggregation="average")),
    "qsn_50_20_b4_avg_up4": ("FedQSN", dict(p1=0.5, p2=0.2, bits=4, aggregation="average",
                                             upload_bits=4)),
    "qsn_80_20_b2": ("FedQSN", dict(p1=0.8, p2=0.2, bits=2)),
    "qsn_50_20_b4_all": ("FedQSN", dict(p1=0.5, p2=0.2, bits=4, client_mask="count_of_all")),
    "quant_b4": ("quantization only", dict(p1=0.0, p2=0.0, bits=4)),
    "quant_b4_avg": ("quantization only", dict(p1=0.0, p2=0.0, bits=4, aggregation="average")),
    "mask_50_20": ("masking only", dict(p1=0.5, p2=0.2, bits=32)),
    "mask_80_20": ("masking only", dict(p1=0.8, p2=0.2, bits=32)),
}
# The sentiment workload's grid (issue 11): p1 in {0.3, 0.5} x p2 in {0.1, 0.2} x NF bits
# in {2, 3, 4}, plus quantization and masking alone at the bits / p1 where the premise
# check saw the pretrained encoder lose most.
GRID_LM = [f"qsn_{p1}_{p2}_b{b}" for p1 in (30, 50) for p2 in (10, 20) for b in (2, 3, 4)]
for _name in GRID_LM:
  _p1, _p2, _b = _name[4:].split("_")
  RUNS.setdefault(_name, ("FedQSN", dict(p1=int(_p1) / 100, p2=int(_p2) / 100, bits=int(_b[1:]))))
RUNS.update({
    "qsn_50_20_b2_avg": ("FedQSN", dict(p1=0.5, p2=0.2, bits=2, aggregation="average")),
    # Average aggregation where delta aggregation learns at all (p1 0.5 does not).
    "qsn_30_10_b4_avg": ("FedQSN", dict(p1=0.3, p2=0.1, bits=4, aggregation="average")),
    # The embedding tables quantized too: the only way under 4 downlink bits per parameter.
    "qsn_50_20_b4_emb": ("FedQSN", dict(p1=0.5, p2=0.2, bits=4, quantize_embeddings=True)),
    "quant_b2": ("quantization only", dict(p1=0.0, p2=0.0, bits=2)),
})
# Fashion-MNIST after the parametrization fix: the preset's client learning rate (0.2)
# divided by s^2 = 6.25 (p1 0.5, p2 0.2), the step the kept units took before the fix.
TOP_LEVEL = {"learning_rate"}  # overrides outside the fedqsn group
RUNS.update({
    "fedavg_lr032": ("FedAvg", dict(p1=0.0, p2=0.0, bits=32, learning_rate=0.032)),
    "qsn_50_20_b4_lr032": ("FedQSN", dict(p1=0.5, p2=0.2, bits=4, learning_rate=0.032)),
    "qsn_80_20_b2_lr032": ("FedQSN", dict(p1=0.8, p2=0.2, bits=2, learning_rate=0.032)),
})
# What `--dataset=X` runs without --only, in this order (the most telling runs first, so
# that a sweep cut short still has them; then the rest of the grid).
_IMAGES_AND_TEXT = ["fedavg", "qsn_30_10_b4", "qsn_50_20_b4", "qsn_50_20_b4_avg",
                    "qsn_50_20_b4_avg_up4", "qsn_80_20_b2", "qsn_50_20_b4_all", "quant_b4",
                    "quant_b4_avg", "mask_50_20", "mask_80_20"]
DEFAULT_RUNS = {
    "fashion_mnist": _IMAGES_AND_TEXT,
    "shakespeare": _IMAGES_AND_TEXT,
    "sentiment": list(dict.fromkeys(
        ["fedavg", "qsn_50_20_b2", "qsn_50_20_b4", "qsn_50_20_b4_emb", "qsn_50_20_b3",
         "qsn_30_10_b4", "quant_b2", "mask_50_20", "qsn_30_10_b4_avg"] + GRID_LM)),
}
# Attackers train `epochs_factor` times a client's local budget. The language model is
# fine-tuned for one local epoch per round in about 19 steps; ten times that per attacker
# (and per colluding pool) would cost more than the whole federated run, so the sentiment
# attackers get three times the local budget.
EPOCHS_FACTOR = {"sentiment": 3}


def attack_flags(dataset: str) -> list[str]:
  return ["--attackers=3", "--colluders=5", f"--epochs_factor={EPOCHS_FACTOR.get(dataset, 10)}"]


def command(dataset: str, name: str, out: pathlib.Path,
            sets: Sequence[str] = ()) -> list[str]:
  """The command of one run; `sets` are sweep-wide KEY=VALUE overrides (a run's own win)."""
  _, overrides = RUNS[name]
  args = [sys.executable, "-m", "launch.extract",
          f"--config=launch/configs/{dataset}.py:fedqsn", f"--workdir={out / dataset / name}",
          f"--config.fedqsn.pretrain_cache_dir={out / 'pretrain_cache'}", *attack_flags(dataset)]
  args += [f"--config.{kv}" for kv in sets]
  return args + [f"--config.{'' if k in TOP_LEVEL else 'fedqsn.'}{k}={v}"
                 for k, v in overrides.items()]


def done(workdir: pathlib.Path) -> bool:
  path = workdir / "summary.json"
  return path.exists() and "best_attacker_accuracy" in json.loads(path.read_text())


def sweep(dataset: str, out: pathlib.Path, only: Sequence[str] = (),
          sets: Sequence[str] = ()) -> None:
  names = list(only) or DEFAULT_RUNS[dataset]
  unknown = sorted(set(names) - set(RUNS))
  if unknown:
    sys.exit(f"unknown configurations {unknown}; known: {sorted(RUNS)}")
  for name in names:
    workdir = out / dataset / name
    if done(workdir):
      print(f"{dataset}/{name}: done, skipped")
      continue
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = command(dataset, name, out, sets)
    print(f"{dataset}/{name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    rc = run_child(cmd, workdir / "log.txt", echo=False,
                   env=dict(os.environ, PYTHONPATH=os.getcwd()))
    print(f"  exit {rc} after {time.perf_counter() - t0:.0f}s", flush=True)
    if rc == PREEMPTED_EXIT:
      print("sweep stopped by a signal (the run checkpointed); rerun the same command")
      sys.exit(PREEMPTED_EXIT)
    if rc:
      sys.exit(f"{dataset}/{name} failed; see {workdir / 'log.txt'}")


def _row(name: str, s: dict, base: dict | None) -> str:
  kind, _ = RUNS[name]
  q = s["config"]["fedqsn"]
  pct = lambda v: f"{100 * v:.1f}"
  delta = "" if base is None else f"{100 * (s['test_accuracy'] - base['test_accuracy']):+.1f}"
  attacked = "best_attacker_accuracy" in s  # a run trained without launch.extract: no attacks
  gap = f"{100 * (s['test_accuracy'] - s['best_attacker_accuracy']):.1f}" if attacked else "n/a"
  attacker = pct(s["best_attacker_accuracy"]) if attacked else "not run"
  alone = pct(s["training_alone_accuracy"]) if attacked else "not run"
  agg = q["aggregation"] + (f", up {q['upload_bits']}b" if q["upload_bits"] != 32 else "")
  if q.get("quantize_embeddings"):
    agg += ", embeddings NF"
  if "learning_rate" in RUNS[name][1]:
    agg += f", client lr {s['config']['learning_rate']:g}"
  return (f"| {name} | {kind} | {q['p1']:g} | {q['p2']:g} | {q['bits']} | {agg} | "
          f"{pct(s['test_accuracy'])} | {delta} | {pct(s['eval_set_global_accuracy'])} | "
          f"{pct(s['server_masked_accuracy'])} | "
          f"{pct(s['client_proxy_accuracy_before'])} | {pct(s['client_proxy_accuracy_after'])} | "
          f"{attacker} | {gap} | {alone} | {s['downlink_bits_per_param']:.2f} |")


HEADER = ("| run | kind | p1 | p2 | bits | aggregation | global | vs FedAvg | "
          "global (proxy eval set) | server-masked | client before | client after | "
          "best attacker | global - attacker | training alone | downlink bits/param |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


SELECTED_HEADER = (
    "| run | global | server-masked | client before | client after | rounds selected "
    "(global, masked, before, after) |\n|---|---|---|---|---|---|")


def _selected_row(name: str, s: dict) -> str:
  """Each model at its round of lowest validation loss (the paper's reporting)."""
  sel = s["validation_selected"]
  models = ("global", "server_masked", "client_before", "client_after")
  cells = " | ".join(f"{100 * sel[m]['test_accuracy']:.1f}" for m in models)
  rounds = ", ".join(str(sel[m]["round"]) for m in models)
  return f"| {name} | {cells} | {rounds} |"


def summaries(out: pathlib.Path, dataset: str) -> dict:
  """Finished runs, with or without the attacks (a run trained by launch.train)."""
  found = {}
  for name in RUNS:
    path = out / dataset / name / "summary.json"
    if path.exists():
      found[name] = json.loads(path.read_text())
  return found


def report(out: pathlib.Path, plot: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  datasets = [d for d in ("fashion_mnist", "shakespeare", "sentiment") if summaries(out, d)]
  if not datasets:
    sys.exit(f"no finished runs under {out}")
  fig, axes = plt.subplots(2, len(datasets), figsize=(7 * len(datasets), 10), squeeze=False)
  for col, dataset in enumerate(datasets):
    ax = axes[0][col]
    runs = summaries(out, dataset)
    base = runs.get("fedavg")
    lines = [f"### {dataset}", "", HEADER] + [_row(n, s, base) for n, s in runs.items()]
    s0 = next(iter(runs.values()))
    info = s0["data_info"]
    n_test = info.get("test_examples", info.get("test_windows"))
    if s0["config"]["test_limit"]:  # Shakespeare reports its windows before the limit
      n_test = min(n_test, s0["config"]["test_limit"])
    start = (f"Server-pretrained model: {100 * s0['server_pretrained_accuracy']:.1f}% "
             f"(trained on {s0['server_examples']} server examples)"
             if "server_pretrained_accuracy" in s0 else
             "No server pretraining (every run starts from the public pretrained model "
             "with a fresh head)")
    lines += ["", f"{start}; proxy metrics on "
              f"{s0['fedqsn_eval_examples']} test examples (the columns from 'global (proxy "
              f"eval set)' to 'client after'); global and attackers on all "
              f"{n_test} test examples."]
    selected = {n: s for n, s in runs.items() if "validation_selected" in s}
    if selected:
      s1 = next(iter(selected.values()))
      lines += ["", "Selected by validation loss (the paper's reporting: each model at the "
                "evaluated round where its validation loss was lowest, then its accuracy on "
                f"the {s1['fedqsn_eval_examples']} proxy test examples; validation: "
                f"{s1['validation_examples']} examples, {s1['validation_source']}):", "",
                SELECTED_HEADER] + [_selected_row(n, s) for n, s in selected.items()]
    missing = sorted(set(runs) - set(selected))
    if selected and missing:
      lines += ["", f"Not selected by validation (run before that report existed): "
                f"{', '.join(missing)}."]
    text = "\n".join(lines)
    (out / f"{dataset}.md").write_text(text + "\n")
    print(text + "\n")
    for name, s in runs.items():
      x = s["downlink_bits_per_param"]
      color = {"FedAvg": "black", "FedQSN": "tab:blue", "quantization only": "tab:green",
               "masking only": "tab:orange"}[RUNS[name][0]]
      ax.scatter([x], [100 * s["test_accuracy"]], color=color, marker="o")
      if "best_attacker_accuracy" in s:
        ax.plot([x, x], [100 * s["best_attacker_accuracy"], 100 * s["test_accuracy"]],
                color=color, alpha=0.5)
        ax.scatter([x], [100 * s["best_attacker_accuracy"]], color=color, marker="x")
      ax.annotate(name, (x, 100 * s["test_accuracy"]), fontsize=7, rotation=30)
    if base is not None:
      ax.axhline(100 * base["test_accuracy"], color="black", ls="--", lw=0.8,
                 label="FedAvg global")
      ax.axhline(100 * base["test_accuracy"] - 15, color="red", ls=":", lw=0.8,
                 label="goal: attacker <= FedAvg - 15")
      if "training_alone_accuracy" in base:
        ax.axhline(100 * base["training_alone_accuracy"], color="gray", ls="-.", lw=0.8,
                   label="a client training alone")
    ax.set_xscale("log")
    ax.set_xlabel("downlink bits / parameter")
    ax.set_ylabel("test accuracy (%)  o: global model, x: best attacker")
    ax.set_title(dataset)
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1][col]
    for i, (name, s) in enumerate(runs.items()):
      rows = [json.loads(l) for l in
              (out / dataset / name / "metrics.jsonl").read_text().splitlines()]
      color = plt.get_cmap("tab20")(i % 20)
      rounds = [r["round"] for r in rows]
      acc = [100 * r["test_accuracy"] for r in rows]
      if "server_pretrained_accuracy" in s:  # round 0: the server-pretrained model
        rounds, acc = [0] + rounds, [100 * s["server_pretrained_accuracy"]] + acc
      ax.plot(rounds, acc, color=color, label=name)
      rounds = [r["round"] for r in rows if "client_proxy_accuracy_after" in r]
      rows = [r for r in rows if "client_proxy_accuracy_after" in r]
      ax.plot(rounds, [100 * r["client_proxy_accuracy_after"] for r in rows], color=color,
              ls=":")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)  solid: global, dotted: best client after training")
    ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  pathlib.Path(plot).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(plot, dpi=120)
  print(f"plot: {plot}")


def main(argv):
  del argv
  out = pathlib.Path(FLAGS.out)
  if FLAGS.report:
    report(out, FLAGS.plot)
  elif FLAGS.dataset is None:
    sys.exit("--dataset is required (or --report)")
  else:
    claim_folder(out)  # one sweep per output folder
    sweep(FLAGS.dataset, out, FLAGS.only, FLAGS.set)


if __name__ == "__main__":
  define_flags()
  app.run(main)
