"""FedAvg vs each update-privacy stage alone vs the whole stack, on one workload.

    python -m launch.update_privacy_sweep --workdir=runs/update_privacy [--rows=a,b]
        [--preset=launch/configs/fashion_mnist.py:private] [--extra=--config.rounds=20]

Every row is `python -m launch.train` on the preset (the whole stack) with the privacy
options of that row overridden; rows whose summary.json exists are not run again. The
table (accuracy, epsilon at delta, bits per parameter up and down, seconds per round)
and each row's exact command go to stdout and `WORKDIR/table.md`.
"""
import importlib.util
import json
import pathlib
import shlex
import sys

from absl import app, flags

from launch.cli import claim_folder, commands_block, run_rows, workdir_flag

_WORKDIR = workdir_flag("Where each row's run goes.")
_PRESET = flags.DEFINE_string("preset", "launch/configs/fashion_mnist.py:private",
                              "Config file and preset with the whole stack.")
_ROWS = flags.DEFINE_list("rows", None, "Rows to run (default: all).")
_EXTRA = flags.DEFINE_string("extra", "", "Extra flags for every row (quoted).")

# Every stage off; rows switch on what they measure.
_OFF = {"enabled": True, "clip": 1e9, "mask_ratio": 0.0, "bits": 0, "noise": "none",
        "noise_multiplier": 0.0, "target_epsilon": 0.0, "secagg": False, "dropout": 0.0}


def rows(stack: dict) -> dict[str, dict | None]:
  """Row name -> privacy overrides (None: privacy off, plain FedAvg)."""
  clip = {"clip": stack["clip"]}
  quant = {**clip, "bits": stack["bits"]}
  return {
      "fedavg": None,
      "mask": {**_OFF, "mask_ratio": stack["mask_ratio"]},
      "clip": {**_OFF, **clip},
      "quantize": {**_OFF, **quant},
      "central_noise": {**_OFF, **clip, "noise": "central",
                        "target_epsilon": stack["target_epsilon"]},
      # Secure aggregation needs integers, so it runs on the quantized update. Without
      # the mask every client expands 1.66M-word masks per neighbour; the sum is exact
      # at any degree, so 2 neighbours (and no dropouts) keep the row affordable.
      "secagg": {**_OFF, **quant, "secagg": True, "secagg_neighbors": 2},
      "stack": {},
  }


def command(name: str, overrides: dict | None, workdir: pathlib.Path) -> list[str]:
  cmd = [sys.executable, "-m", "launch.train", f"--config={_PRESET.value}",
         f"--workdir={workdir / name}"]
  if overrides is None:
    cmd.append("--config.privacy.enabled=False")
  else:
    cmd += [f"--config.privacy.{k}={v}" for k, v in overrides.items()]
  return cmd + shlex.split(_EXTRA.value)


def _stack_privacy() -> dict:
  """The preset's privacy group (the whole stack the rows take their values from)."""
  path, _, preset = _PRESET.value.partition(":")
  spec = importlib.util.spec_from_file_location("preset_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset) if preset else module.get_config()
  return config.privacy.to_dict()


def _eps(value) -> str:
  return "-" if value is None else ("inf" if value == float("inf") else f"{value:.2f}")


def _claim(summary: dict, name: str):
  """The epsilon of one labelled claim of `summary["epsilons"]` (None if absent)."""
  for c in summary.get("epsilons", ()):
    if c["name"] == name:
      return c["epsilon"]
  return None


def table(workdir: pathlib.Path, names, commands) -> str:
  lines = ["| row | test accuracy | epsilon vs observers (RDP / PLD) | epsilon vs the server, "
           "most participations (RDP / PLD) | delta | uplink bits/param "
           "| downlink bits/param | uplink vs float32 | seconds/round |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name in names:
    path = workdir / name / "summary.json"
    if not path.exists():
      lines.append(f"| {name} | (not run) | | | | | | | |")
      continue
    s = json.loads(path.read_text())
    up = s["uplink_bits_per_param"]
    lines.append(f"| {name} | {100 * s['test_accuracy']:.2f}% | "
                 f"{_eps(_claim(s, 'observer_rdp'))} / {_eps(_claim(s, 'observer_pld'))} | "
                 f"{_eps(_claim(s, 'server_max_rdp'))} / {_eps(_claim(s, 'server_max_pld'))} | "
                 f"{s.get('delta', '-')} | {up:.3f} | "
                 f"{s['downlink_bits_per_param']:.3f} | {32.0 / up:.1f}x less | "
                 f"{s['seconds_per_round']:.2f} |")
  lines += commands_block(names, commands)
  return "\n".join(lines)


def main(argv):
  del argv
  if not _WORKDIR.value:
    sys.exit("--workdir is required")
  workdir = pathlib.Path(_WORKDIR.value)
  claim_folder(workdir)  # one sweep per folder; creates it
  all_rows = rows(_stack_privacy())
  names = _ROWS.value or list(all_rows)
  unknown = [n for n in names if n not in all_rows]
  if unknown:
    sys.exit(f"unknown rows {unknown}; known: {list(all_rows)}")
  commands = {n: command(n, all_rows[n], workdir) for n in names}
  run_rows(commands, workdir)
  text = table(workdir, names, commands)
  (workdir / "table.md").write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
