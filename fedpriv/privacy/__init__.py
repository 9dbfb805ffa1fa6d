"""Update privacy (tier 2): each client protects its update before it leaves.

`privatizers` (mask, clip, quantize, noise: stages, each a client transform and its
server inverse, and `chain`), `ring`, `secagg` (secure aggregation and its stage),
`mechanism` (every derived number, and the chain), `accounting` (dp_accounting),
`ledger` (bits up and down), `uplink` (FedAvg's uplink seam), `setup` (wiring for
`fedpriv.train.build`). Design and guarantees: docs/update_privacy.md.
"""
