"""Trains one federated experiment.

    python -m launch.train --config=launch/configs/fashion_mnist.py --workdir=DIR \
        [--config.rounds=3 --config.seed=1 ...]

Several processes (one per host, or several on one host) run one experiment together:
start the same command in each with `--coordinator_address=HOST0:PORT
--num_processes=N --process_id=i --config.num_devices=<all devices>`; the cohort is
split over every process's devices and the weighted sum is reduced across processes.

A bad option is refused before any work starts: one line on stderr, exit status 2;
so is a workdir that another live process is writing. SIGTERM or SIGINT (preemption,
Ctrl-C) finish the current round, save a checkpoint and exit with status 75: the same
command continues the run. Changing only `rounds`, `eval_every` or `checkpoint_every`
continues a run in its workdir.
"""
from absl import app, flags

from launch.cli import (check_common, claim_existing_workdir, config_flag, parse_flags,
                        refuse, run_experiment, workdir_flag)

_CONFIG = config_flag()
_WORKDIR = workdir_flag()
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, to run one experiment over "
    "several processes/hosts with jax.distributed (use with --config.num_devices).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes in a distributed run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index (0 writes results).")


def main(argv):
  check_common(argv, _CONFIG, "launch/configs/fashion_mnist.py", _WORKDIR)
  if _COORDINATOR.value or _NUM_PROCESSES.value > 1:
    if not _COORDINATOR.value:
      refuse("--num_processes > 1 needs --coordinator_address=host:port")
    if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
      refuse(f"--process_id must be in [0, {_NUM_PROCESSES.value}), got {_PROCESS_ID.value}")
    import jax  # pylint: disable=import-outside-toplevel
    # CPU processes reduce across each other through gloo; GPUs and TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  # Import after flag parsing: JAX reads XLA_FLAGS when it starts.
  from fedpriv.config import Config, ConfigError  # pylint: disable=import-outside-toplevel
  from fedpriv import train  # pylint: disable=import-outside-toplevel
  try:
    cfg = Config.from_dict(_CONFIG.value.to_dict())
    claim_existing_workdir(_WORKDIR.value)
    experiment = train.build(cfg)
  except ConfigError as e:
    refuse(str(e))
  run_experiment(experiment, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
