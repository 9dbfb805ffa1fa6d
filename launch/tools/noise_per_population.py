"""What epsilon buys for a population: the noise multiplier the accountant needs, and
the noise it puts on the mean update, for Poisson cohorts of small and large populations.

    python -m launch.tools.noise_per_population

Central Gaussian noise, add/remove, Poisson sampling, delta 1e-5 (the `private` presets'
accounting, with distributed noise accounted the same way), calibrated by
`accounting.calibrate_noise_multiplier` through `make_mechanism`, as a run does. The
last column is the noise's standard deviation on each coordinate of the mean update in
units of the clip bound C: z / m (the sum's z C divided by the expected cohort m).
Multiply by sqrt(d) for its L2 norm beside the clipped mean's at most C.
"""
from fedpriv.config import PrivacyConfig
from fedpriv.privacy import accounting
from fedpriv.privacy.mechanism import make_mechanism

GRID = ((438, (40, 100, 219)), (6000, (1000,)))  # Shakespeare's roles; 6,000 clients of 10


def main():
  print("| clients N | expected cohort m | q | rounds | epsilon | z | noise per coordinate "
        "of the mean (x C) |")
  print("|---|---|---|---|---|---|---|")
  for n, cohorts in GRID:
    for rounds in (100, 300):
      for eps in (4.0, 8.0):
        for m in cohorts:
          cfg = PrivacyConfig(enabled=True, clip=1.0, noise="central", target_epsilon=eps)
          mech = make_mechanism(cfg, num_clients=n, cohort=m, rounds=rounds, size=1,
                                sampling="poisson", capacity=n)
          z = mech.noise_multiplier
          assert accounting.epsilon(mech, rounds) <= eps
          print(f"| {n} | {m} | {m / n:.3f} | {rounds} | {eps:g} | {z:.3f} | {z / m:.4f} |",
                flush=True)


if __name__ == "__main__":
  main()
