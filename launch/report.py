"""Turns a set of workdirs into a markdown report and PNG plots.

    python -m launch.report --workdirs='runs/eps/*,runs/bits/*' --out=runs/report

Reads what each workdir holds: summary.json (a training run: accuracy, epsilon,
bits per parameter, FedQSN's protection gap and ratios from its config), attack.json
(gradient inversion rows) and membership.json (membership inference rows). Writes
OUT/report.md (one table per kind) and the plots whose metrics are present:

  accuracy_vs_epsilon.png   test accuracy against the accountant's epsilon (one line per
                            privacy setting other than the noise; runs without DP as
                            reference lines)
  accuracy_vs_bits.png      test accuracy against uplink bits per parameter
  gap_vs_p1.png, gap_vs_p2.png, gap_vs_bits.png
                            FedQSN's protection gap against each ratio (one line per
                            setting of the other two)
  curves.png                every training run's test accuracy per round
  inversion_psnr.png        reconstruction PSNR against batch size, per defense
  roc.png is not redrawn: it lives in each membership workdir.

A plot whose metrics no workdir has is skipped (and said so).
"""
from __future__ import annotations

import glob
import json
import math
import pathlib

from absl import app, flags

from launch.cli import parse_flags, refuse

FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags (defined only when run as a script)."""
  flags.DEFINE_list("workdirs", None, "Workdirs or glob patterns.")
  flags.DEFINE_string("out", None, "Folder for report.md and the plots.")
  flags.DEFINE_string("title", "fedpriv report", "Heading of report.md.")


def _finite(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v) -> str:
  if v is None:
    return ""
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, float):
    if not math.isfinite(v):
      return str(v)
    return f"{v:.4g}"
  return str(v)


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
  """Markdown table of `rows` with (key, heading) columns; empty columns dropped."""
  columns = [(k, h) for k, h in columns if any(r.get(k) is not None for r in rows)]
  lines = ["| " + " | ".join(h for _, h in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
  return "\n".join(lines)


def expand_workdirs(patterns) -> list[pathlib.Path]:
  out = []
  for p in patterns:
    matches = sorted(glob.glob(p)) or [p]
    out += [pathlib.Path(m) for m in matches if pathlib.Path(m).is_dir()]
  return list(dict.fromkeys(out))


def _privacy_label(cfg: dict) -> str | None:
  p = cfg.get("privacy") or {}
  if not p.get("enabled"):
    return None
  parts = []
  if p.get("mask_ratio"):
    parts.append(f"mask {p['mask_ratio']:g}")
  parts.append(f"clip {p.get('clip', 0):g}")
  if p.get("bits"):
    parts.append(f"{p['bits']} bits")
  if p.get("noise", "none") != "none":
    parts.append(f"{p['noise']} noise")
  if p.get("secagg"):
    parts.append("secagg")
  return ", ".join(parts)


def collect(workdirs) -> dict:
  """Rows per kind: `train`, `inversion`, `membership`."""
  train, inversion, member = [], [], []
  for wd in workdirs:
    name = wd.name
    if (wd / "summary.json").exists():
      s = json.loads((wd / "summary.json").read_text())
      cfg = s.get("config", {})
      q = cfg.get("fedqsn") or {}
      fedqsn = bool(q.get("enabled"))
      train.append({
          "run": name, "workdir": str(wd), "test_accuracy": s.get("test_accuracy"),
          "epsilon": s.get("epsilon") if _finite(s.get("epsilon")) else None,
          "delta": s.get("delta") if _finite(s.get("epsilon")) else None,
          "uplink_bits": s.get("uplink_bits_per_param"),
          "downlink_bits": s.get("downlink_bits_per_param"),
          "privacy": _privacy_label(cfg),
          "p1": q.get("p1") if fedqsn else None, "p2": q.get("p2") if fedqsn else None,
          "b": q.get("bits") if fedqsn else None,
          "protection_gap": s.get("protection_gap"),
          "client_proxy_accuracy": s.get("client_proxy_accuracy_after"),
          "rounds": s.get("rounds"), "has_metrics": (wd / "metrics.jsonl").exists()})
    if (wd / "attack.json").exists():
      for r in json.loads((wd / "attack.json").read_text()):
        inversion.append({"run": name, **r})
    if (wd / "membership.json").exists():
      for r in json.loads((wd / "membership.json").read_text()):
        member.append({"run": name, **r})
  return {"train": train, "inversion": inversion, "membership": member}


def _series(rows, x_key, y_key, group):
  out: dict = {}
  for r in rows:
    if _finite(r.get(x_key)) and _finite(r.get(y_key)):
      xs, ys = out.setdefault(group(r), ([], []))
      xs.append(r[x_key])
      ys.append(r[y_key])
  return out


def make_report(workdirs, out, title: str = "fedpriv report", log=print) -> dict:
  """Writes OUT/report.md and the plots; returns {"markdown", "plots", "skipped"}."""
  # pylint: disable=import-outside-toplevel
  from fedpriv import plots
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  rows = collect(expand_workdirs(workdirs))
  written, skipped = [], []
  md = [f"# {title}", ""]

  train = rows["train"]
  if train:
    md += ["## Training runs", "", _table(train, [
        ("run", "run"), ("test_accuracy", "test accuracy"), ("epsilon", "epsilon"),
        ("delta", "delta"), ("uplink_bits", "uplink bits/param"),
        ("downlink_bits", "downlink bits/param"), ("privacy", "update privacy"),
        ("p1", "p1"), ("p2", "p2"), ("b", "b"), ("protection_gap", "protection gap"),
        ("client_proxy_accuracy", "best client proxy accuracy"), ("rounds", "rounds")]), ""]

  def plot(name, make, ok, why):
    if ok:
      make(out / name)
      written.append(name)
    else:
      skipped.append(f"{name} ({why})")

  no_dp = [r for r in train if r["epsilon"] is None and _finite(r["test_accuracy"])]
  ref = (no_dp[0]["test_accuracy"], f"{no_dp[0]['run']} (no DP)") if no_dp else None
  eps = _series(train, "epsilon", "test_accuracy", lambda r: r["privacy"] or "DP")
  plot("accuracy_vs_epsilon.png",
       lambda p: plots.plot_xy(eps, p, "epsilon (accountant)", "test accuracy",
                               "accuracy vs epsilon", xscale="log", reference=ref),
       bool(eps), "no run reports a finite epsilon")
  bits = _series(train, "uplink_bits", "test_accuracy",
                 lambda r: f"epsilon {r['epsilon']:.3g}" if r["epsilon"] else "no DP")
  plot("accuracy_vs_bits.png",
       lambda p: plots.plot_xy(bits, p, "uplink bits per parameter", "test accuracy",
                               "accuracy vs bits", xscale="log"),
       len({x for xs, _ in bits.values() for x in xs}) > 1,
       "fewer than two distinct uplink bit widths")
  for key, label in (("p1", "server mask p1"), ("p2", "client mask p2"), ("b", "bits b")):
    others = [k for k in ("p1", "p2", "b") if k != key]
    gap = _series(train, key, "protection_gap",
                  lambda r, o=others: ", ".join(f"{k}={r[k]:g}" for k in o))
    plot(f"gap_vs_{'bits' if key == 'b' else key}.png",
         lambda p, g=gap, l=label: plots.plot_xy(g, p, l, "protection gap",
                                                 f"protection gap vs {l}"),
         bool(gap), "no run reports FedQSN's protection_gap")
  curves = [r for r in train if r["has_metrics"]]
  plot("curves.png", lambda p: plots.plot_runs([r["workdir"] for r in curves], p,
                                               [r["run"] for r in curves]),
       bool(curves), "no metrics.jsonl")

  inv = rows["inversion"]
  if inv:
    md += ["## Gradient inversion", "", _table(inv, [
        ("run", "run"), ("defense", "defense"), ("batch_size", "batch"),
        ("local_steps", "local steps"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"),
        ("label_accuracy", "labels right"), ("epsilon", "epsilon"),
        ("clients_in_sum", "clients in sum"), ("trials", "trials")]), ""]
  psnr = _series(inv, "batch_size", "psnr",
                 lambda r: f"{r['defense']}, {r['local_steps']} step(s)")
  plot("inversion_psnr.png",
       lambda p: plots.plot_xy(psnr, p, "batch size", "PSNR (dB)",
                               "gradient inversion", xscale="log"),
       len({x for xs, _ in psnr.values() for x in xs}) > 1,
       "attack rows with at least two batch sizes")

  mem = rows["membership"]
  if mem:
    md += ["## Membership inference", "", _table(mem, [
        ("run", "run"), ("defense", "defense"), ("test_accuracy", "test accuracy"),
        ("auc", "AUC"), ("tpr_at_0.1%fpr", "TPR at 0.1% FPR"),
        ("tpr_at_1%fpr", "TPR at 1% FPR"), ("shadow_auc", "shadow AUC"),
        ("epsilon", "epsilon"), ("bound_holds", "DP bound holds"),
        ("epsilon_lower_bound", "measured epsilon (lower bound)")]), ""]

  if written:
    md += ["## Plots", ""] + [f"![{n}]({n})" for n in written] + [""]
  if skipped:
    md += ["Skipped: " + "; ".join(skipped), ""]
  text = "\n".join(md)
  (out / "report.md").write_text(text)
  log(f"wrote {out / 'report.md'} and {len(written)} plots"
      + (f"; skipped {', '.join(s.split(' (')[0] for s in skipped)}" if skipped else ""))
  return {"markdown": text, "plots": written, "skipped": skipped}


def main(argv):
  if len(argv) > 1:
    refuse(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdirs:
    refuse("--workdirs is required (workdirs or glob patterns, comma-separated)")
  if not FLAGS.out:
    refuse("--out is required")
  if not expand_workdirs(FLAGS.workdirs):
    refuse(f"--workdirs: no such folders: {','.join(FLAGS.workdirs)}")
  make_report(FLAGS.workdirs, FLAGS.out, FLAGS.title)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
