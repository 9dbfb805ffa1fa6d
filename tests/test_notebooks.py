"""Every notebook in notebooks/ runs top to bottom with tiny settings (FEDPRIV_TINY=1)."""
import glob
import json
import os

import pytest

from conftest import ROOT, requires_fmnist

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_there_are_notebooks_and_their_outputs_are_stripped():
  assert len(NOTEBOOKS) >= 2
  for path in NOTEBOOKS:
    with open(path) as f:
      nb = json.load(f)
    for cell in nb["cells"]:
      if cell["cell_type"] == "code":
        assert not cell["outputs"] and cell["execution_count"] is None, path


@requires_fmnist
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes_with_tiny_settings(path, monkeypatch):
  monkeypatch.setenv("FEDPRIV_TINY", "1")
  # The kernel imports this checkout's fedpriv, whatever is installed.
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": os.path.dirname(path)}})
  client.execute()  # raises CellExecutionError, naming the cell, when one fails
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any(o.output_type == "display_data" and "image/png" in o.get("data", {})
             for o in outputs), "the notebook shows no plot"


def test_two_runs_in_one_process_each_compile_once(tmp_path):
  """A notebook (or a defense sweep) trains several experiments in one process; the
  driver's one-trace-per-run check must count each run's traces only."""
  # pylint: disable=import-outside-toplevel
  import numpy as np
  import optax
  from conftest import tiny_population, tiny_task
  from fedpriv import train
  from fedpriv.config import Config
  from fedpriv.data.client_data import EvalData, FederatedDataset
  from fedpriv.fedavg import FedAvg
  pop = tiny_population([8] * 4, seed=1)
  data = FederatedDataset("tiny", pop, EvalData(np.asarray(pop.x[0]), np.asarray(pop.y[0]),
                                                np.asarray(pop.mask[0])), 3,
                          "classification", tuple(f"c{i}" for i in range(4)))
  for i in range(2):
    cfg = Config(num_clients=4, clients_per_round=2, rounds=2, batch_size=4)
    algo = FedAvg(task=tiny_task(), client_optimizer=optax.sgd(0.1),
                  server_optimizer=optax.sgd(1.0), clients_per_round=2, local_epochs=1,
                  batch_size=4)
    summary = train.run(train.Experiment(cfg, data, algo.task, algo), tmp_path / str(i),
                        log=lambda *_: None)
    assert summary["rounds"] == 2
