"""Privacy attacks: what an adversary learns from fedpriv's updates and models.

  image_metrics.py         PSNR, SSIM (dm-pix), best matching of reconstructions
  labels.py                labels from the last layer of an update (iDLG, negative entries)
  inversion.py             gradient inversion (Inverting Gradients: cosine + TV, optax)
  defenses.py              defense specs -> the real privacy mechanism (fedpriv.privacy)
  observe.py               the attacker's view: the output of one real FedAvg round
  membership.py            per-example scores, ROC, AUC, TPR at low FPR, shadow attack
  dp_audit.py              TPR <= e^eps FPR + delta on a measured ROC (Clopper-Pearson)
  config.py                AttackConfig (nests the attacked deployment's Config)
  inversion_experiment.py  the inversion grid -> attack.json + images
  membership_experiment.py train, attack, audit -> membership.json + roc.png
"""


def run(cfg, workdir, log=print):
  """Runs the experiment `cfg.kind` names; returns its rows."""
  # pylint: disable=import-outside-toplevel
  if cfg.kind == "inversion":
    from fedpriv.attacks import inversion_experiment
    return inversion_experiment.run(cfg, workdir, log)
  from fedpriv.attacks import membership_experiment
  return membership_experiment.run(cfg, workdir, log)
