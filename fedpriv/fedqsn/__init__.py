"""FedQSN model privacy (arXiv 2508.18911): clients receive masked, quantized proxies.

One concept per file:
  units.py        which parameters carry hidden units, which are quantized (per model)
  masks.py        server mask (once per run), client mask (per client per round)
  nf_quant.py     NF-b levels and blockwise absmax quantization
  wire.py         the proxy's byte encoding and its exact bit count
  proxy.py        FedQSNDownlink: the proxy every client receives
  aggregation.py  FedQSNUplink: "average" and "delta" aggregation
"""
