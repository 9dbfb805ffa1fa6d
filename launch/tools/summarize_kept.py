"""Tables and a figure from kept results (`launch/tools/keep_result.py` files): runs that
differ only in their seed are one row, with the mean and the spread (min to max).

    python -m launch.tools.summarize_kept \
        --files='docs/results/update_privacy/fed6000_*.json' \
        --plot=docs/results/update_privacy/fed6000.png

Prints a markdown table (one row per setting) and, with `--plot`, draws three panels:
the learning curves (the mean over seeds), test accuracy against uplink bits per
parameter (runs with secure aggregation) and test accuracy against epsilon (runs with
noise; the no-noise setting is the dashed reference), each at the longest run length.
"""
import glob
import json
import math
import pathlib
import statistics

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a script, so the functions import next to other tools."""
  flags.DEFINE_string("files", None, "Glob of kept result files.", required=True)
  flags.DEFINE_string("plot", "", "Write the three-panel figure here (PNG).")
  flags.DEFINE_string("title", "", "Figure title.")


def setting(summary: dict) -> tuple:
  """What a run is, without its seed: runs with equal settings are one row."""
  c, p = summary["config"], summary["config"].get("privacy", {})
  noisy = p.get("enabled") and p.get("noise", "none") != "none"
  return (summary["rounds"], p.get("noise", "none") if noisy else "none",
          round(summary["epsilon"], 2) if noisy else math.inf,
          p.get("bits", 0) if p.get("enabled") else 0,
          p.get("mask_ratio", 0.0) if p.get("enabled") else 0.0,
          p.get("rotation", "none") if p.get("enabled") else "none",
          bool(p.get("enabled") and p.get("secagg")), c.get("model"))


def label(key: tuple) -> str:
  rounds, noise, eps, bits, mask, rotation, secagg, _ = key
  if noise == "none":
    what = "no noise"
  elif noise == "central":
    what = f"central noise, eps {eps:g}"
  else:
    what = f"eps {eps:g}, {bits} bits, mask {mask:g}"
    what += ", Hadamard" if rotation == "hadamard" else ""
    what += ", SecAgg" if secagg else ""
    what = "whole stack: " + what
  return f"{what}, {rounds} rounds"


_NOISE_ORDER = {"none": 0, "central": 1, "distributed": 2}


def groups(summaries: list[dict]) -> dict:
  """setting -> the runs of that setting (sorted by seed)."""
  out: dict = {}
  for s in summaries:
    out.setdefault(setting(s), []).append(s)
  return {k: sorted(v, key=lambda s: s["config"]["seed"])
          for k, v in sorted(out.items(), key=lambda kv: (
              -kv[0][0], _NOISE_ORDER.get(kv[0][1], 3), -kv[0][2], -kv[0][3], kv[0][5]))}


def _stat(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
  if len(values) == 1:
    return f"{scale * values[0]:.{digits}f}"
  return (f"{scale * statistics.mean(values):.{digits}f} "
          f"({scale * min(values):.{digits}f} to {scale * max(values):.{digits}f})")


def table(summaries: list[dict]) -> str:
  rows = ["| setting | seeds | test accuracy, % (mean, min to max) | epsilon (RDP) | "
          "uplink bits/param | s/round |", "|---|---|---|---|---|---|"]
  for key, runs in groups(summaries).items():
    eps = runs[0]["epsilon"]
    rows.append(
        f"| {label(key)} | {', '.join(str(r['config']['seed']) for r in runs)} | "
        f"{_stat([r['test_accuracy'] for r in runs])} | "
        f"{'-' if math.isinf(eps) else f'{eps:.2f}'} | "
        f"{statistics.mean(r['uplink_bits_per_param'] for r in runs):.2f} | "
        f"{statistics.mean(r['seconds_per_round'] for r in runs):.2f} |")
  return "\n".join(rows)


def _mean_curve(runs: list[dict]):
  by_round: dict = {}
  for r in runs:
    for c in r.get("curve", []):
      by_round.setdefault(c["round"], []).append(c["test_accuracy"])
  rounds = sorted(k for k, v in by_round.items() if len(v) == len(runs))
  return rounds, [statistics.mean(by_round[k]) for k in rounds]


def figure(summaries: list[dict], path, title: str = "") -> None:
  from fedpriv import plots  # pylint: disable=import-outside-toplevel
  plt = plots._pyplot()  # pylint: disable=protected-access
  g = groups(summaries)
  longest = max(k[0] for k in g)
  at_length = {k: v for k, v in g.items() if k[0] == longest}
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for key, runs in at_length.items():
    xs, ys = _mean_curve(runs)
    axes[0].plot(xs, ys, marker="o", ms=3, label=f"{label(key)} (x{len(runs)})")
  axes[0].set(xlabel="round", ylabel="test accuracy (mean over seeds)",
              title="learning curves")
  nonoise = [v for k, v in at_length.items() if k[1] == "none"]
  ref = statistics.mean(r["test_accuracy"] for r in nonoise[0]) if nonoise else None
  for ax in axes[1:]:
    if ref is not None:
      ax.axhline(ref, color="gray", ls="--", label="no noise")
      ax.axhline(ref - 0.012, color="gray", ls=":", label="no noise - 1.2 points")
  for rotation in ("none", "hadamard"):
    pts = sorted((statistics.mean(r["uplink_bits_per_param"] for r in v), r["test_accuracy"])
                 for k, v in at_length.items() if k[6] and k[5] == rotation for r in v)
    if pts:
      axes[1].plot(*zip(*pts), marker="o", ls="none",
                   label="Hadamard rotation" if rotation == "hadamard" else "no rotation")
      for k, v in at_length.items():
        if k[6] and k[5] == rotation:
          axes[1].annotate(f"{k[3]} bits", (v[0]["uplink_bits_per_param"],
                                            v[0]["test_accuracy"]), fontsize=7)
  axes[1].set(xlabel="uplink bits per parameter (float32 FedAvg: 32)",
              ylabel="test accuracy", title="whole stack: accuracy vs uplink")
  for noise in ("central", "distributed"):
    pts = [(k[2], r["test_accuracy"]) for k, v in at_length.items()
           if k[1] == noise and (noise == "central" or k[3] == 8 and k[5] == "none")
           for r in v]
    if pts:
      axes[2].plot(*zip(*sorted(pts)), marker="o", ls="none",
                   label="central noise" if noise == "central" else "whole stack, 8 bits")
  axes[2].set_xscale("log")
  eps_seen = sorted({k[2] for k in at_length if k[1] != "none"})
  if eps_seen:
    from matplotlib import ticker  # pylint: disable=import-outside-toplevel
    axes[2].set_xticks(eps_seen, [f"{e:g}" for e in eps_seen])
    axes[2].xaxis.set_minor_formatter(ticker.NullFormatter())
  axes[2].set(xlabel="epsilon (RDP, delta 1e-5)", ylabel="test accuracy",
              title="accuracy vs epsilon (every seed)")
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def load(pattern: str) -> list[dict]:
  files = sorted(glob.glob(pattern))
  if not files:
    raise FileNotFoundError(f"no files match {pattern!r}")
  return [json.loads(pathlib.Path(f).read_text()) for f in files]


def main(argv):
  del argv
  try:
    summaries = load(FLAGS.files)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from None
  print(table(summaries))
  if FLAGS.plot:
    figure(summaries, FLAGS.plot, FLAGS.title)
    print(f"plot: {FLAGS.plot}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
