"""Plots test accuracy per round of several runs on one figure.

    python -m launch.plot_runs --runs=runs/a,runs/b --labels=LSTM,transformer \
        --baseline=0.1874 --baseline_label="most frequent character" --out=curves.png
"""
from absl import app, flags

_RUNS = flags.DEFINE_list("runs", None, "Workdirs (each with metrics.jsonl).")
_LABELS = flags.DEFINE_list("labels", None, "One label per run (default: the workdir).")
_METRIC = flags.DEFINE_string("metric", "test_accuracy", "Key of metrics.jsonl to plot.")
_BASELINE = flags.DEFINE_float("baseline", None, "Draw a horizontal reference line here.")
_BASELINE_LABEL = flags.DEFINE_string("baseline_label", "baseline", "Its legend entry.")
_TITLE = flags.DEFINE_string("title", "", "Figure title.")
_OUT = flags.DEFINE_string("out", "curves.png", "Output PNG.")


def main(argv):
  del argv
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from fedpriv.plots import read_metrics  # pylint: disable=import-outside-toplevel

  labels = _LABELS.value or _RUNS.value
  if len(labels) != len(_RUNS.value):
    raise app.UsageError("--labels needs one label per run")
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for run, label in zip(_RUNS.value, labels):
    records = read_metrics(run)
    if not records:
      raise app.UsageError(f"{run} has no metrics.jsonl records")
    ax.plot([r["round"] for r in records], [r[_METRIC.value] for r in records], marker="o",
            ms=3, label=label)
  if _BASELINE.value is not None:
    ax.axhline(_BASELINE.value, color="gray", ls="--", label=_BASELINE_LABEL.value)
  ax.set_xlabel("round")
  ax.set_ylabel(_METRIC.value.replace("_", " "))
  ax.grid(alpha=0.3)
  ax.legend()
  if _TITLE.value:
    ax.set_title(_TITLE.value)
  fig.tight_layout()
  fig.savefig(_OUT.value, dpi=110)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  flags.mark_flag_as_required("runs")
  app.run(main)
