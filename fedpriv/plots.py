"""Plots of a run's metrics (matplotlib, no display needed)."""
from __future__ import annotations

import json
import pathlib


def read_metrics(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def plot_curves(workdir, title: str = "") -> pathlib.Path | None:
  """Writes `curves.png` (test accuracy and losses per round) into the workdir."""
  records = read_metrics(workdir)
  if not records:
    return None
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  rounds = [r["round"] for r in records]
  fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.4))
  ax_acc.plot(rounds, [r["test_accuracy"] for r in records], marker="o", ms=3, label="test")
  if "train_accuracy" in records[0]:
    ax_acc.plot(rounds, [r["train_accuracy"] for r in records], marker=".", ms=3,
                alpha=0.7, label="train (local steps)")
  ax_acc.set_xlabel("round")
  ax_acc.set_ylabel("accuracy")
  ax_acc.grid(alpha=0.3)
  ax_acc.legend()
  ax_loss.plot(rounds, [r["test_loss"] for r in records], marker="o", ms=3, label="test")
  if "train_loss" in records[0]:
    ax_loss.plot(rounds, [r["train_loss"] for r in records], marker=".", ms=3, alpha=0.7,
                 label="train (local steps)")
  ax_loss.set_xlabel("round")
  ax_loss.set_ylabel("loss")
  ax_loss.grid(alpha=0.3)
  ax_loss.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  out = pathlib.Path(workdir) / "curves.png"
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out
