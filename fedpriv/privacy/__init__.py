"""Update privacy (tier 2): each client protects its update before it leaves.

`privatizers` (mask, clip, quantize, noise as optax-like stages), `secagg` (secure
aggregation), `mechanism` (every derived number), `accounting` (dp_accounting),
`ledger` (bits up and down), `uplink` (FedAvg's uplink seam), `setup` (wiring for
`fedpriv.train.build`). Design and guarantees: docs/update_privacy.md.
"""
