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
  from fedpriv.plots import plot_runs  # pylint: disable=import-outside-toplevel
  try:
    plot_runs(_RUNS.value, _OUT.value, _LABELS.value, _METRIC.value, _BASELINE.value,
              _BASELINE_LABEL.value, _TITLE.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  flags.mark_flag_as_required("runs")
  app.run(main)
