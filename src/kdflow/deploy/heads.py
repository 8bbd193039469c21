"""Structured pruning of attention heads (Michel, Levy & Neubig, "Are Sixteen Heads
Really Better than One?", NeurIPS 2019).

Importance of head ``h`` in layer ``l`` is the expected absolute sensitivity of the
loss to a gate ``xi_lh`` that scales the head's output (all gates at 1)::

    I_lh = E_batches | dL / d xi_lh |

The gates are applied by a forward pre-hook on each layer's attention output
projection (whose input is the concatenation of the heads), so no model code is
changed. Pruning removes the chosen heads' rows from the query/key/value
projections and the matching columns of the output projection: the model gets
smaller and faster, not just masked. At least one head is kept in every layer.

Supported: BERT-style encoders whose layers have ``attention.self`` (with
``query``, ``key``, ``value``, ``num_attention_heads``, ``attention_head_size``)
and ``attention.output.dense`` — BERT, MiniLM, RoBERTa, ELECTRA and kdflow's
students built from them.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import KdflowError


def attention_blocks(model: nn.Module) -> list[tuple[nn.Module, nn.Linear]]:
    """``(self_attention, output_projection)`` for every layer, in order."""
    blocks = []
    for module in model.modules():
        att = getattr(module, "attention", None)
        sa = getattr(att, "self", None)
        out = getattr(getattr(att, "output", None), "dense", None)
        if sa is not None and isinstance(out, nn.Linear) and all(
                hasattr(sa, k) for k in ("query", "key", "value", "num_attention_heads", "attention_head_size")):
            blocks.append((sa, out))
    if not blocks:
        raise KdflowError(f"Head pruning needs a BERT-style encoder (layers with attention.self and "
                          f"attention.output.dense); {type(model).__name__} has none — skip --prune-heads for it")
    return blocks


def head_importance(model: nn.Module, batches: Iterable[dict], targets: Iterable[torch.Tensor],
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy
                    ) -> torch.Tensor:
    """``[layers, max_heads]`` importance scores (NaN where a layer has fewer heads), normalised
    per layer to unit L2 norm as in Michel et al. ``batches`` are model inputs, ``targets`` the labels."""
    blocks = attention_blocks(model)
    gates = [torch.ones(sa.num_attention_heads, requires_grad=True) for sa, _ in blocks]
    handles = []
    for (sa, out), gate in zip(blocks, gates):
        d = sa.attention_head_size

        def pre(_mod, args, gate=gate, d=d):
            x = args[0]
            shaped = x.view(*x.shape[:-1], -1, d) * gate.view(-1, 1)
            return (shaped.view(x.shape),) + tuple(args[1:])
        handles.append(out.register_forward_pre_hook(pre))
    was_training = model.training
    model.eval()
    scores = [torch.zeros(len(g)) for g in gates]
    try:
        for inputs, y in zip(batches, targets):
            out = model(**inputs)
            logits = out.logits if hasattr(out, "logits") else out
            grads = torch.autograd.grad(loss_fn(logits, y), gates, allow_unused=True)
            for s, g in zip(scores, grads):
                if g is not None:
                    s += g.abs()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    width = max(len(s) for s in scores)
    table = torch.full((len(scores), width), float("nan"))
    for i, s in enumerate(scores):
        table[i, : len(s)] = s / s.norm().clamp_min(1e-12)
    return table


def heads_to_prune(importance: torch.Tensor, fraction: float) -> dict[int, list[int]]:
    """The globally least important ``fraction`` of heads, keeping at least one head per layer."""
    if not 0.0 < fraction < 1.0:
        raise KdflowError(f"The fraction of heads to prune must be between 0 and 1 (exclusive), got {fraction}")
    live = [(float(importance[i, j]), i, j) for i in range(importance.shape[0])
            for j in range(importance.shape[1]) if not torch.isnan(importance[i, j])]
    n = int(round(fraction * len(live)))
    left = {i: int((~torch.isnan(importance[i])).sum()) for i in range(importance.shape[0])}
    chosen: dict[int, list[int]] = {}
    for _, i, j in sorted(live):
        if n == 0:
            break
        if left[i] > 1:
            chosen.setdefault(i, []).append(j)
            left[i] -= 1
            n -= 1
    return {i: sorted(v) for i, v in sorted(chosen.items())}


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    new = nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None)
    new.weight.data = linear.weight.data[rows].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data[rows].clone()
    return new


def prune_heads(model: nn.Module, heads: dict[int, list[int]]) -> nn.Module:
    """Remove ``heads`` (``{layer: [head, ...]}``) from ``model`` in place; returns the model."""
    blocks = attention_blocks(model)
    for layer, drop in heads.items():
        if not 0 <= layer < len(blocks):
            raise KdflowError(f"Layer {layer} does not exist: the model has layers 0..{len(blocks) - 1}")
        sa, out = blocks[layer]
        n, d = sa.num_attention_heads, sa.attention_head_size
        bad = [h for h in drop if not 0 <= h < n]
        if bad or len(set(drop)) >= n:
            raise KdflowError(f"Cannot prune heads {drop} of layer {layer}: it has heads 0..{n - 1} and must keep one")
        keep = [h for h in range(n) if h not in set(drop)]
        idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep])
        sa.query, sa.key, sa.value = (_keep_rows(sa.query, idx), _keep_rows(sa.key, idx), _keep_rows(sa.value, idx))
        out.weight.data = out.weight.data[:, idx].clone()
        out.in_features = len(idx)
        sa.num_attention_heads = len(keep)
        sa.all_head_size = len(idx)
    return model


__all__ = ["attention_blocks", "head_importance", "heads_to_prune", "prune_heads"]
