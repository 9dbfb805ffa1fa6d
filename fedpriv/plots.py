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


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def save_image_grid(rows, path, row_labels=None, title: str = "", scale: float = 0.9,
                    col_labels=None):
  """Writes a PNG of images in rows (e.g. originals above reconstructions).

  Args:
    rows: a list of `[N, H, W, C]` arrays in [0, 1] (rows may differ in length).
    path: the PNG to write.
    row_labels: optional text left of each row.
    title: optional figure title.
    col_labels: optional text above each column.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  plt = _pyplot()
  rows = [np.asarray(r) for r in rows]
  cols = max(len(r) for r in rows)
  fig, axes = plt.subplots(len(rows), cols, figsize=(
      scale * cols + (1.6 if row_labels else 0),
      scale * len(rows) + (0.4 if title else 0) + (0.3 if col_labels else 0)), squeeze=False)
  for i, row in enumerate(rows):
    for j in range(cols):
      ax = axes[i][j]
      ax.set_xticks([])
      ax.set_yticks([])
      for side in ax.spines.values():
        side.set_visible(False)
      if j < len(row):
        img = np.clip(row[j], 0.0, 1.0)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    if row_labels:
      axes[i][0].set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
  for j, label in enumerate(col_labels or []):
    axes[0][j].set_title(label, fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout(pad=0.2)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return pathlib.Path(path)


def plot_xy(series: dict, path, xlabel: str, ylabel: str, title: str = "",
            xscale: str = "linear", yscale: str = "linear", reference=None):
  """One line (with markers) per entry of `series` (label -> (xs, ys)).

  `reference` is an optional `(y, label)` horizontal line (e.g. plain FedAvg).
  """
  plt = _pyplot()
  import matplotlib.ticker  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  for label, (xs, ys) in series.items():
    pairs = sorted(zip(xs, ys))
    ax.plot([p[0] for p in pairs], [p[1] for p in pairs], marker="o", ms=4, label=label)
  if reference is not None:
    ax.axhline(reference[0], color="gray", ls="--", label=reference[1])
  ax.set_xscale(xscale)
  ax.set_yscale(yscale)
  xs_all = sorted({x for xs, _ in series.values() for x in xs})
  if xscale == "log" and 1 < len(xs_all) <= 8:  # label the measured x values plainly
    ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  if len(series) > 1 or reference is not None:
    ax.legend(fontsize=7, loc="best")
  return _finish(plt, fig, ax, path, title)


def plot_roc(curves: dict, path, title: str = "", bounds: dict | None = None):
  """Log-log ROC curves (label -> (fpr, tpr)), with optional DP bounds
  (label -> (epsilon, delta)) drawn as TPR = min(1, e^eps FPR + delta)."""
  import math  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 4))
  floor = 1e-4
  for label, (fpr, tpr) in curves.items():
    ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=label)
  grid = np.logspace(-4, 0, 200)
  ax.plot(grid, grid, color="gray", ls=":", label="chance")
  for label, (eps, delta) in (bounds or {}).items():
    e = math.exp(min(eps, 50.0))
    ax.plot(grid, np.minimum(1.0, e * grid + delta), ls="--", lw=1,
            label=f"DP bound, {label}")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlim(floor, 1)
  ax.set_ylim(floor, 1.05)
  ax.set_xlabel("false-positive rate")
  ax.set_ylabel("true-positive rate")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  return _finish(plt, fig, ax, path, title)


def _finish(plt, fig, ax, path, title: str):
  """Titles, lays out, saves (110 dpi) and closes a one-axis figure."""
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return pathlib.Path(path)


def plot_runs(runs, path, labels=None, metric: str = "test_accuracy", baseline=None,
              baseline_label: str = "baseline", title: str = ""):
  """`metric` per round of several workdirs (their metrics.jsonl) on one figure.

  Raises:
    ValueError: a workdir has no metrics.jsonl records, or labels do not match runs.
  """
  labels = list(labels or runs)
  if len(labels) != len(runs):
    raise ValueError("labels: one label per run")
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for run, label in zip(runs, labels):
    records = [r for r in read_metrics(run) if metric in r]
    if not records:
      raise ValueError(f"{run} has no metrics.jsonl records with {metric!r}")
    ax.plot([r["round"] for r in records], [r[metric] for r in records], marker="o",
            ms=3, label=label)
  if baseline is not None:
    ax.axhline(baseline, color="gray", ls="--", label=baseline_label)
  ax.set_xlabel("round")
  ax.set_ylabel(metric.replace("_", " "))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return pathlib.Path(path)
