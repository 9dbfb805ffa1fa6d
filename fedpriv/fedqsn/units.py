"""Which parameters carry FedQSN's hidden units, and which of them are quantized.

A hidden unit is an output column of a weight matrix (the last axis of a kernel) together
with its bias entry; masking a unit zeroes exactly those entries, which zeroes the unit's
output for every input. A `ModelSpec` names, for one model, the unit groups (one per
masked layer, with its number of units), the parameter leaves each group spans, and the
leaves that are NF-quantized (the large weight matrices).

- CNN / MLP (`dense_spec`): every layer except the output head is a unit group (CNN:
  `conv1` 32 channels, `conv2` 64, `fc1` 512); every kernel except the head's is
  quantized.
- Transformer (`transformer_spec`): the embedding output (`embed/embedding` and
  `pos_embed`, whose sum is the embedding output: a unit is one residual dimension of
  it), and each block's attention projection `attn_out` and MLP projection `mlp_out`
  (before the residual add). Quantized: the attention and MLP matrices (`query`, `key`,
  `value`, `attn_out`, `mlp_in`, `mlp_out` kernels); embeddings, biases, norms and the
  head stay full precision.
- MiniLM / BERT (`minilm_spec`): the embedding output after its LayerNorm (units are the
  `embed_norm` scale and bias entries), and each layer's `attn_out` and `ffn_out` outputs
  (before the residual add); quantized: `query`, `key`, `value`, `attn_out`, `ffn_in`,
  `ffn_out` kernels.

Leaves are named by their '/'-joined path in the params dict (e.g. "fc1/kernel").
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


def leaf_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def leaf_names(params) -> list[str]:
  return [leaf_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Hidden units and quantized leaves of one model.

  Attributes:
    groups: `(group, num_units)` pairs in a fixed order (one per masked layer).
    unit_leaves: `(leaf, group)` pairs: leaves whose last axis indexes the group's units.
    quantized: leaves quantized with NF-b (their last axis is the output axis; blocks
      run along the input axes of each output column).
  """
  groups: tuple[tuple[str, int], ...]
  unit_leaves: tuple[tuple[str, str], ...]
  quantized: frozenset[str]

  @property
  def num_units(self) -> dict[str, int]:
    return dict(self.groups)

  def group_of(self, leaf: str) -> str | None:
    return dict(self.unit_leaves).get(leaf)

  def map(self, fn: Callable[[str, Any], Any], *trees):
    """`fn(leaf_name, *leaves)` over the leaves of `trees` (all shaped like params)."""
    return jax.tree_util.tree_map_with_path(lambda p, *x: fn(leaf_name(p), *x), *trees)

  def validate(self, params) -> None:
    """Raises ValueError unless the spec fits `params` (names and unit counts)."""
    shapes = {leaf_name(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    units = self.num_units
    for leaf, group in self.unit_leaves:
      if leaf not in shapes:
        raise ValueError(f"unit leaf {leaf!r} is not a parameter")
      if shapes[leaf][-1] != units[group]:
        raise ValueError(f"{leaf} has {shapes[leaf][-1]} units, group {group!r} has "
                         f"{units[group]}")
    for leaf in self.quantized:
      if leaf not in shapes or len(shapes[leaf]) < 2:
        raise ValueError(f"quantized leaf {leaf!r} must be a matrix or kernel")


def embedding_leaves(params) -> frozenset[str]:
  """The model's token and position embedding tables: its matrices named `*embed` or
  `*/embedding` (e.g. MiniLM's `encoder/word_embed`, the transformer's `embed/embedding`)."""
  out = set()
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = leaf_name(path)
    last = name.rsplit("/", 1)[-1]
    if len(x.shape) == 2 and (last.endswith("embed") or last == "embedding"):
      out.add(name)
  return frozenset(out)


def _modules(params) -> dict[str, dict]:
  return {k: v for k, v in params.items() if isinstance(v, dict)}


def dense_spec(params, head: str) -> ModelSpec:
  """Every top-level layer with a kernel is a unit group except `head` (the output layer).

  Fits McMahan et al.'s CNN (`head="fc2"`) and plain MLPs.
  """
  groups, unit_leaves, quantized = [], [], set()
  for name, module in sorted(_modules(params).items()):
    if "kernel" not in module or name == head:
      continue
    groups.append((name, int(module["kernel"].shape[-1])))
    unit_leaves.append((f"{name}/kernel", name))
    if "bias" in module:
      unit_leaves.append((f"{name}/bias", name))
    quantized.add(f"{name}/kernel")
  if head not in params:
    raise ValueError(f"no head layer {head!r} in params {sorted(params)}")
  spec = ModelSpec(tuple(groups), tuple(unit_leaves), frozenset(quantized))
  spec.validate(params)
  return spec


_ATTN_MLP = ("query", "key", "value", "attn_out", "mlp_in", "mlp_out")


def transformer_spec(params) -> ModelSpec:
  """The masked places of `models.transformer.CharTransformer` (see the module doc)."""
  dim = int(params["embed"]["embedding"].shape[-1])
  groups = [("embed", dim)]
  unit_leaves = [("embed/embedding", "embed"), ("pos_embed", "embed")]
  quantized = set()
  blocks = sorted(k for k in params if k.startswith("block"))
  for b in blocks:
    for layer in ("attn_out", "mlp_out"):
      g = f"{b}/{layer}"
      groups.append((g, int(params[b][layer]["kernel"].shape[-1])))
      unit_leaves += [(f"{g}/kernel", g), (f"{g}/bias", g)]
    quantized |= {f"{b}/{layer}/kernel" for layer in _ATTN_MLP}
  spec = ModelSpec(tuple(groups), tuple(unit_leaves), frozenset(quantized))
  spec.validate(params)
  return spec


_MINILM_QUANTIZED = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


def minilm_spec(params) -> ModelSpec:
  """The masked places of `models.minilm.SentenceClassifier` (BERT, post-LayerNorm).

  13 groups for all-MiniLM-L6-v2: the embedding output after its LayerNorm (a unit is
  one residual dimension: the `embed_norm` scale and bias entries that produce it), and
  each layer's `attn_out` and `ffn_out` dense outputs (kernel columns and bias entries),
  before the residual add and the LayerNorm that follows it. Quantized: the Q/K/V,
  attention-output and both FFN kernels; the embeddings, biases, norms and the head stay
  full precision.
  """
  enc = params["encoder"]
  dim = int(enc["embed_norm"]["scale"].shape[-1])
  groups = [("embed", dim)]
  unit_leaves = [("encoder/embed_norm/scale", "embed"), ("encoder/embed_norm/bias", "embed")]
  quantized = set()
  layers = sorted((k for k in enc if k.startswith("layer")), key=lambda k: int(k[5:]))
  for layer in layers:
    for out in ("attn_out", "ffn_out"):
      g = f"encoder/{layer}/{out}"
      groups.append((g, int(enc[layer][out]["kernel"].shape[-1])))
      unit_leaves += [(f"{g}/kernel", g), (f"{g}/bias", g)]
    quantized |= {f"encoder/{layer}/{m}/kernel" for m in _MINILM_QUANTIZED}
  spec = ModelSpec(tuple(groups), tuple(unit_leaves), frozenset(quantized))
  spec.validate(params)
  return spec


SPECS: dict[str, Callable[[Any], ModelSpec]] = {
    "cnn": lambda params: dense_spec(params, head="fc2"),
    "transformer": transformer_spec,
    "minilm": minilm_spec,
}


def model_spec(model: str, params) -> ModelSpec:
  """The spec of a registered model (`params` may be shapes from `jax.eval_shape`)."""
  if model not in SPECS:
    raise ValueError(f"FedQSN defines hidden units for {sorted(SPECS)}, not {model!r}")
  return SPECS[model](params)
