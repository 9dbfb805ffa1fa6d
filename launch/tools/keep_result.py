"""Copy a finished run's results into docs/results/: its summary.json without `data_info`
(the per-client tables, large and the same for every run of a dataset) and its learning
curve from metrics.jsonl (every evaluated round's test accuracy and loss).

    python -m launch.tools.keep_result --workdir=runs/papernot/z2.15 \
        --out=docs/results/update_privacy/papernot_z2.15.json

Notebooks and result pages read these files, so their curves come from the committed
runs and not from runs too short to converge.
"""
import json
import pathlib

from absl import app, flags

from fedpriv import plots

FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a script, so `kept` imports next to other launchers."""
  flags.DEFINE_string("workdir", None, "A finished run's workdir.", required=True)
  flags.DEFINE_string("out", None, "Where to write the JSON.", required=True)


def kept(workdir: pathlib.Path) -> dict:
  """The summary (without `data_info`) with `curve`: `[{round, test_accuracy, test_loss}]`."""
  summary_path = workdir / "summary.json"
  if not summary_path.exists():
    raise FileNotFoundError(f"{summary_path} does not exist: the run has not finished")
  summary = json.loads(summary_path.read_text())
  summary.pop("data_info", None)
  summary["curve"] = [{k: r[k] for k in ("round", "test_accuracy", "test_loss")}
                      for r in plots.read_metrics(workdir) if "test_accuracy" in r]
  return summary


def main(argv):
  del argv
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(kept(pathlib.Path(FLAGS.workdir)), indent=1) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
