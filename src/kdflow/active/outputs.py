"""Stream the pool through the student (and its committee) and keep only what a strategy needs.

Two halves: the forward pass (:func:`forward_batch`: probabilities, MC-dropout passes,
committee members, embeddings of one batch; torch) and the reductions
(:class:`Reducer`, :func:`committee`: pure numpy, testable without a model).

The pool is featurized and scored chunk by chunk (``chunk`` examples, batches of
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
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..data import Featurizer, Split, loader, make_collate
from ..engine.distributed import gather_objects, join_rows, my_share, world
from ..errors import KdflowError
from .selectors import tie_keys
from .strategies import NEEDS, PICKS, SCORES, PoolOutputs, score


def needs_members(strategy: str) -> bool:
    """Whether ``strategy`` reads a committee's outputs (vote entropy, committee KL, a registered one)."""
    return "members" in NEEDS[strategy]


def full_rows(strategy: str, part: str) -> bool:
    """Whether a pass for ``strategy`` keeps output ``part`` for every pool row (selectors such as core-set and
    BADGE compare them all)."""
    return strategy in PICKS and part in NEEDS[strategy]


@dataclass
class PoolPass:
    """What one scoring pass over the pool computes, besides the model, the pool and the featurizer.

    ``seed`` draws the MC-dropout masks and breaks ties in the short list exactly as
    :func:`~kdflow.active.strategies.top_k` does with the same seed. ``teacher_probs(positions)
    -> [n, C]`` supplies the teacher's probabilities (disagreement, the teacher+student
    committee). ``members``: the committee's models (vote entropy, committee KL). ``keep_top``:
    with ``need_embeddings`` for a score-based strategy, keep the embeddings of only that many
    best-scored positions (batch-mode diversity).
    """

    strategy: str
    num_labels: int
    batch_size: int = 256
    chunk: int = 2048
    mc_samples: int = 10
    members: Optional[list[nn.Module]] = None
    teacher_probs: Optional[Callable[[np.ndarray], np.ndarray]] = None
    keep_top: int = 0
    seed: int = 0
    need_embeddings: bool = False
    activation: str = "softmax"  # the task kind's: sigmoid for multilabel

    @property
    def needs(self) -> set:
        return set(NEEDS[self.strategy])

    @property
    def wants_embeddings(self) -> bool:
        return full_rows(self.strategy, "embeddings") or self.need_embeddings

    @property
    def wants_teacher(self) -> bool:
        return self.teacher_probs is not None and ("teacher_probs" in self.needs or needs_members(self.strategy))


# ------------------------------------------------------------------ the forward pass (torch)

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


# the task kind's activation (kdflow.tasks): logits -> the probabilities strategies read
ACTIVATIONS = {"softmax": lambda x: torch.softmax(x, -1), "sigmoid": torch.sigmoid}


def probabilities(logits: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    return ACTIVATIONS[activation](logits.float())


def _probs(model: nn.Module, inputs: dict, activation: str = "softmax") -> np.ndarray:
    logits = model(**inputs).logits.float()
    if not torch.isfinite(logits).all():
        raise KdflowError("The student's outputs on the pool are not finite (NaN or inf), so no strategy can rank "
                          "them; lower train.lr, or use mixed_precision: no (or bf16 instead of fp16)")
    p = probabilities(logits, activation)
    if "word_mask" in inputs:  # token tagging: the positions past a sentence's last word hold no word
        p = p.masked_fill(inputs["word_mask"].to(p.device).unsqueeze(-1) == 0, float("nan"))
    return p.cpu().numpy()


@torch.no_grad()
def forward_batch(model: nn.Module, inputs: dict, spec: PoolPass, teacher_rows: Optional[np.ndarray]
                  ) -> tuple[PoolOutputs, Optional[np.ndarray]]:
    """What ``spec.strategy`` needs of one batch, and the batch's embeddings when asked for."""
    needs, emb = spec.needs, None
    if spec.wants_embeddings:
        with capture_head_input(model, spec.num_labels) as seen:
            p = _probs(model, inputs, spec.activation)
        emb = seen[-1].cpu().numpy()
    else:
        p = _probs(model, inputs, spec.activation) if "probs" in needs else None
    outs = PoolOutputs(n=len(next(iter(inputs.values()))), probs=None if p is None else p.astype(np.float64))
    if "mc_probs" in needs:
        dropout_on(model)  # each pass is one sample of the weights; batch norm keeps its running statistics
        outs.mc_probs = np.stack([_probs(model, inputs, spec.activation) for _ in range(spec.mc_samples)])
        model.eval()
    if "members" in needs:
        own = None
        if teacher_rows is not None:  # the teacher sits on the committee beside the student
            own = p if p is not None else _probs(model, inputs, spec.activation)
        member_probs = np.stack([_probs(m, inputs, spec.activation) for m in spec.members]) if spec.members else None
        outs.members = committee(spec.strategy, member_probs, own, teacher_rows)
    if "teacher_probs" in needs:
        outs.teacher_probs = teacher_rows
    return outs, emb


# ------------------------------------------------------------------ reductions (numpy)

def committee(strategy: str, members: Optional[np.ndarray], student: Optional[np.ndarray],
              teacher: Optional[np.ndarray]) -> np.ndarray:
    """``[M, n, C]``: the checkpoint members' probabilities, then the student's and the teacher's when
    the teacher sits on the committee; at least two members."""
    extra = [student, teacher] if teacher is not None else []
    out = members if not extra else (np.stack(extra) if members is None else np.concatenate([members, np.stack(extra)]))
    if out is None or len(out) < 2:
        raise KdflowError(f"Strategy {strategy} needs a committee of at least 2 models; "
                          "set active.committee_size >= 2 or active.committee: teacher_student")
    return out


class Reducer:
    """Keeps, across batches, what the strategy ranks by: scores, the diversity short list, or the
    full embeddings (and probabilities) that core-set and BADGE compare."""

    def __init__(self, n: int, spec: PoolPass):
        self.n, self.spec = n, spec
        self.scores = np.full(n, -np.inf) if spec.strategy in SCORES else None
        self.probs = np.zeros((n, spec.num_labels), dtype=np.float32) if full_rows(spec.strategy, "probs") else None
        self.embeddings: Optional[np.ndarray] = None
        self.short_pos, self.short_emb, self.short_score = np.zeros(0, np.int64), None, np.zeros(0)

    def add(self, rows: np.ndarray, outs: PoolOutputs, emb: Optional[np.ndarray]) -> None:
        spec = self.spec
        if self.scores is not None:
            s = score(spec.strategy, outs)
            self.scores[rows] = s
            if emb is not None and spec.keep_top:
                self._keep_best(rows, s, emb)
        if full_rows(spec.strategy, "embeddings"):
            if self.embeddings is None:
                self.embeddings = np.zeros((self.n, emb.shape[1]), dtype=np.float32)
            self.embeddings[rows] = emb
        if self.probs is not None:
            self.probs[rows] = outs.probs

    def _keep_best(self, rows: np.ndarray, scores: np.ndarray, emb: np.ndarray) -> None:
        """The running short list: the ``keep_top`` best scores; ties as ``top_k`` breaks them."""
        self.short_pos = np.concatenate([self.short_pos, rows])
        self.short_score = np.concatenate([self.short_score, scores])
        self.short_emb = emb if self.short_emb is None else np.concatenate([self.short_emb, emb])
        if len(self.short_pos) > self.spec.keep_top:
            keep = np.lexsort((tie_keys(self.short_pos, self.spec.seed), -self.short_score))[:self.spec.keep_top]
            self.short_pos, self.short_score, self.short_emb = \
                self.short_pos[keep], self.short_score[keep], self.short_emb[keep]

    def result(self) -> PoolOutputs:
        out = PoolOutputs(n=self.n, scores=self.scores, probs=self.probs)
        if full_rows(self.spec.strategy, "embeddings"):
            out.embeddings = self.embeddings if self.embeddings is not None else np.zeros((self.n, 1), np.float32)
        elif self.spec.need_embeddings and self.short_emb is not None:
            order = np.argsort(self.short_pos)
            out.embeddings, out.embedding_rows = self.short_emb[order], self.short_pos[order]
        return out


# ------------------------------------------------------------------ the pass

def stream_pool(model: nn.Module, pool: Split, positions: np.ndarray, featurize: Callable[[], Featurizer], device,
                spec: PoolPass) -> PoolOutputs:
    """Outputs of ``model`` over ``pool[positions]`` for ``spec.strategy``; ``featurize()`` makes a fresh
    featurizer per chunk (its id cache then holds one chunk: memory bounded by the chunk). Under several
    processes each scores its share of the positions and every process gets the joined outputs."""
    if world() > 1:
        return _sharded_pool(model, pool, np.asarray(positions, dtype=np.int64), featurize, device, spec)
    return _stream(model, pool, positions, featurize, device, spec)


def _sharded_pool(model, pool: Split, positions: np.ndarray, featurize, device, spec: PoolPass) -> PoolOutputs:
    if spec.wants_teacher:  # the teacher's rows first, by every process alike (its pass is split too)
        every = spec.teacher_probs(positions)
        where = {int(p): i for i, p in enumerate(positions)}
        spec = replace(spec, teacher_probs=lambda pos: every[[where[int(p)] for p in pos]])
    mine = np.asarray(my_share(positions), dtype=np.int64)
    local = _stream(model, pool, mine, featurize, device, spec)
    return _joined(len(pool), gather_objects(_share(local, mine, spec)), spec)


def _share(local: PoolOutputs, mine: np.ndarray, spec: PoolPass) -> dict:
    """What one process sends of its pass over positions ``mine``: their rows only, and its short list."""
    short = local.embedding_rows if local.embedding_rows is not None else np.zeros(0, np.int64)
    return {"rows": mine, "scores": None if local.scores is None else local.scores[mine],
            "probs": None if local.probs is None else local.probs[mine],
            "embeddings": local.embeddings[mine] if full_rows(spec.strategy, "embeddings") else None,
            "short": (short, local.embeddings if len(short) else None,
                      local.scores[short] if local.scores is not None and len(short) else None)}


def _joined(n: int, parts: list[dict], spec: PoolPass) -> PoolOutputs:
    """One process's view of the whole pool from every process's share (the short list re-cut to its size)."""
    def joined(key: str, fill: float) -> Optional[np.ndarray]:
        if all(p[key] is None for p in parts):
            return None
        return join_rows(n, [(p["rows"], p[key]) for p in parts], fill)
    out = PoolOutputs(n=n, scores=joined("scores", -np.inf), probs=joined("probs", 0.0),
                      embeddings=joined("embeddings", 0.0))
    shorts = [p["short"] for p in parts if p["short"][1] is not None]
    if shorts:
        pos = np.concatenate([s[0] for s in shorts])
        emb, score = np.concatenate([s[1] for s in shorts]), np.concatenate([s[2] for s in shorts])
        keep = np.lexsort((tie_keys(pos, spec.seed), -score))[:spec.keep_top]
        order = keep[np.argsort(pos[keep])]
        out.embeddings, out.embedding_rows = emb[order], pos[order]
    return out


def _stream(model: nn.Module, pool: Split, positions: np.ndarray, featurize: Callable[[], Featurizer], device,
            spec: PoolPass) -> PoolOutputs:
    positions = np.asarray(positions, dtype=np.int64)
    reducer = Reducer(len(pool), spec)
    model.to(device).eval()  # trained, restored or evaluated on the CPU: score where the inputs go
    for m in spec.members or []:
        m.to(device).eval()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)  # MC-dropout masks: the same for the same seed, whatever ran before
    try:
        for start in range(0, len(positions), spec.chunk):
            part_pos = positions[start:start + spec.chunk]
            part = pool.subset(part_pos)
            dl = loader(part, make_collate(part, featurize()), spec.batch_size, shuffle=False)
            t_part = spec.teacher_probs(part_pos) if spec.wants_teacher else None
            offset = 0
            for batch in dl:
                rows = part_pos[offset:offset + len(batch["index"])]
                t_rows = t_part[offset:offset + len(rows)] if t_part is not None else None
                offset += len(rows)
                inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
                reducer.add(rows, *forward_batch(model, inputs, spec, t_rows))
    finally:
        torch.random.set_rng_state(gen_state)
        model.eval()
    return reducer.result()


__all__ = ["PoolPass", "stream_pool", "forward_batch", "committee", "Reducer", "head_layer", "capture_head_input",
           "needs_members", "full_rows", "probabilities"]


def dropout_on(model) -> None:
    """Eval mode except the dropout layers (MC dropout): a CNN's batch norm must not switch to batch statistics
    (nor overwrite its running ones) while the pool is scored."""
    model.eval()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)):
            m.train()
