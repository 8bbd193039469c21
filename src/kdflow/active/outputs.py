"""Stream the pool through the student (and its committee) and keep only what a strategy needs.

The pool is tokenized and scored chunk by chunk (``chunk`` examples, batches of
``batch_size``); per-example scores are reduced inside the chunk, so memory grows
with the chunk, not with the pool. What is kept across chunks:

* ``scores`` ``[N]`` for score-based strategies (MC-dropout passes and committee
  members are reduced to a score per batch, never stored as ``[T, N, C]``);
* for batch-mode diversity, the embeddings of the ``keep_top`` best-scored candidates
  only (a running short list);
* for core-set and BADGE, the embeddings ``[N, D]`` (and BADGE's probabilities
  ``[N, C]``): these strategies compare every example with every chosen one.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..data import Featurizer, Split, loader, make_collate
from ..errors import KdflowError
from .strategies import NEEDS, SCORES, PoolOutputs, tie_keys


def head_layer(model: nn.Module, num_labels: int) -> nn.Linear:
    """The classifier's output layer: the last ``nn.Linear`` producing ``num_labels`` values."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not found:
        raise KdflowError(f"Cannot find the output layer of {type(model).__name__} (a Linear with {num_labels} "
                          "outputs); embedding-based strategies need one")
    return found[-1]


@contextlib.contextmanager
def capture_head_input(model: nn.Module, num_labels: int):
    """Collects the input of the output layer (the penultimate representation) on each forward."""
    seen: list[torch.Tensor] = []
    handle = head_layer(model, num_labels).register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().float().reshape(args[0].shape[0], -1)))
    try:
        yield seen
    finally:
        handle.remove()


def _probs(model: nn.Module, inputs: dict) -> torch.Tensor:
    logits = model(**inputs).logits.float()
    if not torch.isfinite(logits).all():
        raise KdflowError("The student's outputs on the pool are not finite (NaN or inf), so no strategy can rank "
                          "them; lower train.lr, or use mixed_precision: no (or bf16 instead of fp16)")
    return torch.softmax(logits, -1)


def stream_pool(model: nn.Module, pool: Split, positions: np.ndarray, tokenizer, max_length: int, strategy: str,
                num_labels: int, device, batch_size: int = 256, chunk: int = 2048, mc_samples: int = 10,
                members: Optional[list[nn.Module]] = None, teacher_probs: Optional[Callable] = None,
                keep_top: int = 0, seed: int = 0, need_embeddings: bool = False) -> PoolOutputs:
    """Outputs of ``model`` over ``pool[positions]`` for ``strategy``.

    ``seed`` draws the MC-dropout masks and breaks ties in the short list exactly as
    :func:`~kdflow.active.strategies.top_k` does with the same seed.
    ``teacher_probs(positions) -> [n, C]`` supplies the teacher's probabilities (disagreement,
    the teacher+student committee). ``members``: the committee's models (vote entropy,
    committee KL). ``keep_top``: with ``need_embeddings`` for a score-based strategy, keep
    the embeddings of only that many best-scored positions (batch-mode diversity).
    """
    needs = set(NEEDS[strategy])
    n = len(pool)
    positions = np.asarray(positions, dtype=np.int64)
    full_emb = strategy in ("coreset", "badge")
    want_emb = full_emb or need_embeddings
    out = PoolOutputs(n=n)
    scores = np.full(n, -np.inf) if strategy in SCORES else None
    probs_all = np.zeros((n, num_labels), dtype=np.float32) if strategy == "badge" else None
    emb_all: Optional[np.ndarray] = None
    short_pos, short_emb, short_score = np.zeros(0, np.int64), None, np.zeros(0)
    model.to(device).eval()  # trained, restored or evaluated on the CPU: score where the inputs go
    for m in members or []:
        m.to(device).eval()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # MC-dropout masks: the same for the same seed, whatever ran before
    try:
        for start in range(0, len(positions), chunk):
            part_pos = positions[start:start + chunk]
            part = pool.subset(part_pos)
            feat = Featurizer(tokenizer, max_length)  # a fresh cache per chunk: memory bounded by the chunk
            dl = loader(part, make_collate(part, feat), batch_size, shuffle=False)
            t_part = teacher_probs(part_pos) if teacher_probs is not None and (
                "teacher_probs" in needs or strategy in ("vote_entropy", "committee_kl")) else None
            offset = 0
            for batch in dl:
                inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
                rows = part_pos[offset:offset + len(batch["index"])]
                t_rows = t_part[offset:offset + len(rows)] if t_part is not None else None
                offset += len(rows)
                with torch.no_grad():
                    if want_emb:
                        with capture_head_input(model, num_labels) as seen:
                            p = _probs(model, inputs)
                        emb = seen[-1].cpu().numpy()
                    else:
                        p = _probs(model, inputs) if needs & {"probs"} else None
                        emb = None
                    outs = PoolOutputs(n=len(rows), probs=None if p is None else p.cpu().numpy().astype(np.float64))
                    if "mc_probs" in needs:
                        model.train()  # dropout on: each pass is one sample of the weights
                        outs.mc_probs = np.stack([_probs(model, inputs).cpu().numpy() for _ in range(mc_samples)])
                        model.eval()
                    if "members" in needs:
                        if members:
                            outs.members = np.stack([_probs(m, inputs).cpu().numpy() for m in members])
                        if t_rows is not None:  # the teacher sits on the committee beside the student
                            own = p if p is not None else _probs(model, inputs)
                            extra = [own.cpu().numpy(), t_rows]
                            outs.members = np.concatenate([outs.members, np.stack(extra)]) \
                                if outs.members is not None else np.stack(extra)
                        if outs.members is None or len(outs.members) < 2:
                            raise KdflowError(f"Strategy {strategy} needs a committee of at least 2 models; "
                                              "set active.committee_size >= 2 or active.committee: teacher_student")
                    if "teacher_probs" in needs:
                        outs.teacher_probs = t_rows
                if scores is not None:
                    s = SCORES[strategy](outs)
                    scores[rows] = s
                    if emb is not None and keep_top:
                        short_pos = np.concatenate([short_pos, rows])
                        short_score = np.concatenate([short_score, s])
                        short_emb = emb if short_emb is None else np.concatenate([short_emb, emb])
                        if len(short_pos) > keep_top:  # keep the best keep_top; ties as top_k breaks them
                            keep = np.lexsort((tie_keys(short_pos, seed), -short_score))[:keep_top]
                            short_pos, short_score, short_emb = short_pos[keep], short_score[keep], short_emb[keep]
                if full_emb:
                    if emb_all is None:
                        emb_all = np.zeros((n, emb.shape[1]), dtype=np.float32)
                    emb_all[rows] = emb
                if probs_all is not None:
                    probs_all[rows] = outs.probs
    finally:
        torch.random.set_rng_state(gen_state)
        model.eval()
    out.scores = scores
    if full_emb:
        out.embeddings = emb_all if emb_all is not None else np.zeros((n, 1), dtype=np.float32)
    elif need_embeddings and short_emb is not None:
        order = np.argsort(short_pos)
        out.embeddings, out.embedding_rows = short_emb[order], short_pos[order]
    out.probs = probs_all
    return out
