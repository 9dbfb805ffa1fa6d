"""Accuracy against uplink bits per value, with and without the Hadamard rotation.

    python -m launch.bits_sweep --workdir=runs/bits [--bits=4,6,8,12] [--clip=2.0]
        [--sigmas=4.0] [--preset=launch/configs/fashion_mnist.py:fedavg]
        [--extra="--config.rounds=10"]

Every row is `python -m launch.train` on the preset with update privacy on and only
clipping and b-bit stochastic quantization (no mask, noise or secure aggregation, so
each client sends exactly b bits per value): `float` (clip only, float32),
`b{b}` (quantizer range [-C, C]) and `b{b}_rot` (`privacy.rotation=hadamard`, range
[-t C / sqrt(D), t C / sqrt(D)]). Rows whose summary.json exists are not run again. The
table goes to stdout and `WORKDIR/table.md` with each row's exact command.
"""
import json
import pathlib
import shlex
import sys

from absl import app, flags

from launch.cli import claim_folder, commands_block, run_rows

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a script, so that tests can import `rows` and `command`
  beside other launch modules that define flags of the same names."""
  flags.DEFINE_string("workdir", None, "Where each row's run goes.")
  flags.DEFINE_string("preset", "launch/configs/fashion_mnist.py:fedavg",
                      "Config file and preset.")
  flags.DEFINE_list("bits", ["4", "6", "8", "12"], "Bits per value to measure.")
  flags.DEFINE_float("clip", 2.0, "The L2 clip bound C (sets the quantizer's range).")
  flags.DEFINE_float("sigmas", 4.0, "privacy.rotation_sigmas of the rotated rows.")
  flags.DEFINE_list("rows", None, "Rows to run (default: all).")
  flags.DEFINE_string("extra", "", "Extra flags for every row (quoted).")


def rows(bits, clip: float, sigmas: float) -> dict[str, dict]:
  """Row name -> privacy overrides."""
  base = {"enabled": True, "clip": clip}
  out = {"float": dict(base)}
  for b in bits:
    out[f"b{b}"] = {**base, "bits": int(b)}
    out[f"b{b}_rot"] = {**base, "bits": int(b), "rotation": "hadamard",
                        "rotation_sigmas": sigmas}
  return out


def command(preset: str, name: str, overrides: dict, workdir: pathlib.Path,
            extra: str = "") -> list[str]:
  return ([sys.executable, "-m", "launch.train", f"--config={preset}",
           f"--workdir={workdir / name}"] +
          [f"--config.privacy.{k}={v}" for k, v in overrides.items()] + shlex.split(extra))


def table(workdir: pathlib.Path, names, all_rows, commands) -> str:
  lines = ["| row | rotation | bits/value | test accuracy | uplink bits/param "
           "| values beyond the range | seconds/round |", "|---|---|---|---|---|---|---|"]
  for name in names:
    o = all_rows[name]
    rot = o.get("rotation", "none")
    bits = o.get("bits", 32)
    path = workdir / name / "summary.json"
    if not path.exists():
      lines.append(f"| {name} | {rot} | {bits} | (not run) | | | |")
      continue
    s = json.loads(path.read_text())
    beyond = s.get("quantizer_beyond_range_fraction")
    lines.append(f"| {name} | {rot} | {bits} | {100 * s['test_accuracy']:.2f}% | "
                 f"{s['uplink_bits_per_param']:.3f} | "
                 f"{'-' if beyond is None else f'{beyond:.2e}'} | "
                 f"{s['seconds_per_round']:.2f} |")
  lines += commands_block(names, commands)
  return "\n".join(lines)


def main(argv):
  del argv
  if not FLAGS.workdir:
    sys.exit("--workdir is required")
  workdir = pathlib.Path(FLAGS.workdir)
  claim_folder(workdir)  # one sweep per folder; creates it
  all_rows = rows(FLAGS.bits, FLAGS.clip, FLAGS.sigmas)
  names = FLAGS.rows or list(all_rows)
  unknown = [n for n in names if n not in all_rows]
  if unknown:
    sys.exit(f"unknown rows {unknown}; known: {list(all_rows)}")
  commands = {n: command(FLAGS.preset, n, all_rows[n], workdir, FLAGS.extra)
              for n in names}
  run_rows(commands, workdir)
  text = table(workdir, names, all_rows, commands)
  (workdir / "table.md").write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
