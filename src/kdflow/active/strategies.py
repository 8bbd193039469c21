"""Query strategies: pure numpy functions from model outputs to scores, and batch selectors.

Scores (``[N]``, higher = more worth a label; Settles, "Active Learning Literature
Survey", 2009, section 3):

=================  ==========================================  ===========================================
name               score of example i                          reference
=================  ==========================================  ===========================================
least_confidence   ``1 - max_c p_ic``                          Lewis & Gale 1994
margin             ``-(p_i(1) - p_i(2))`` (top-2 gap, negated)  Scheffer et al. 2001
entropy            ``-sum_c p_ic log p_ic``                    Shannon; Settles 3.1
bald               ``H(mean_t p_t) - mean_t H(p_t)`` over T    Houlsby et al. 2011; Gal et al. 2017
                   MC-dropout passes (mutual information)
vote_entropy       entropy of the committee's hard votes       Dagan & Engelson 1995
committee_kl       ``mean_m KL(p_m || mean_m p_m)``            McCallum & Nigam 1998
disagreement       ``KL(p_teacher || p_student)``              teacher-student disagreement
mnlp               ``-(1/n) sum_w log max_c p_wc`` (tagging)   Shen et al. 2018
=================  ==========================================  ===========================================

Token tagging scores a sentence from its words (``probs`` ``[N, W, C]``, NaN past its last word):
``mean_token_margin`` and ``min_token_margin`` (the mean or smallest top-2 gap, negated) and ``mnlp``.

Selectors pick ``k`` positions among the candidates (the unlabelled pool):

* :func:`top_k` — the ``k`` best scores (ties broken by a seeded permutation).
* :func:`diverse_top_k` — batch-mode diversity: the ``factor * k`` best scores, then
  greedy k-centre on their embeddings, starting from the best (so a round does not
  take 100 near-duplicates; in the spirit of Zhdanov 2019, "Diverse mini-batch AL").
* :func:`coreset` — greedy k-centre on embeddings against the labelled set
  (Sener & Savarese 2018); distances in chunks, so 100k x 384 fits in memory and time.
* :func:`badge` — k-means++ seeding on gradient embeddings ``g_i = (p_i - e_yhat) ⊗ h_i``
  (Ash et al. 2020). The ``C·D``-wide embeddings are never built: ``<g_i, g_j> =
  <a_i, a_j>·<h_i, h_j>`` with ``a = p - e_yhat``.

Every strategy goes through :func:`select`, which returns distinct candidate
positions in selection order and is deterministic for a given seed. One contract
test (``tests/test_active_strategies.py``) holds every strategy to that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .selectors import (
    EPS,
    badge,
    check_probs,
    coreset,
    diverse_top_k,
    k_centre_greedy,
    min_sq_dist,
    order,
    tie_keys,
    top_k,
)

# ------------------------------------------------------------------ scores

def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c``: 0 for a certain prediction, ``1 - 1/C`` for a uniform one."""
    p = check_probs(probs)
    return 1.0 - p.max(-1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Negated gap between the two most probable classes: near 0 = a coin flip between two."""
    p = np.sort(check_probs(probs), axis=-1)
    return -(p[..., -1] - p[..., -2])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum p log p`` (nats): 0 for one-hot, ``log C`` for uniform."""
    p = check_probs(probs)
    return -(p * np.log(np.clip(p, EPS, 1.0))).sum(-1)


def bald(mc_probs: np.ndarray) -> np.ndarray:
    """Mutual information between the prediction and the weights, from ``[T, N, C]`` MC-dropout
    samples: the entropy of the mean minus the mean entropy. High when the passes are each
    confident but disagree (epistemic), low when they agree, however flat (aleatoric)."""
    p = check_probs(mc_probs, "mc_probs")
    if p.ndim != 3:
        raise ValueError(f"mc_probs must be [T, N, C] (MC passes, examples, classes), got shape {p.shape}")
    return np.maximum(entropy(p.mean(0)) - entropy(p).mean(0), 0.0)


def vote_entropy(member_probs: np.ndarray) -> np.ndarray:
    """Entropy of the committee's hard votes (``[M, N, C]`` member probabilities)."""
    p = check_probs(member_probs, "member_probs")
    if p.ndim != 3:
        raise ValueError(f"member_probs must be [M, N, C] (members, examples, classes), got shape {p.shape}")
    votes = p.argmax(-1)  # [M, N]
    counts = np.stack([(votes == c).sum(0) for c in range(p.shape[-1])], -1) / p.shape[0]  # [N, C]
    return entropy(counts)


def committee_kl(member_probs: np.ndarray) -> np.ndarray:
    """Mean KL divergence of each member from the committee's consensus (``[M, N, C]``)."""
    p = check_probs(member_probs, "member_probs")
    if p.ndim != 3:
        raise ValueError(f"member_probs must be [M, N, C] (members, examples, classes), got shape {p.shape}")
    mean = p.mean(0, keepdims=True)
    kl = (p * (np.log(np.clip(p, EPS, 1.0)) - np.log(np.clip(mean, EPS, 1.0)))).sum(-1)
    return np.maximum(kl.mean(0), 0.0)


def disagreement(student_probs: np.ndarray, teacher_probs: np.ndarray) -> np.ndarray:
    """``KL(p_teacher || p_student)``: where the student has not yet learnt what the teacher knows."""
    s, t = check_probs(student_probs), check_probs(teacher_probs, "teacher_probs")
    if s.shape != t.shape:
        raise ValueError(f"student and teacher probabilities differ in shape: {s.shape} vs {t.shape}")
    return np.maximum((t * (np.log(np.clip(t, EPS, 1.0)) - np.log(np.clip(s, EPS, 1.0)))).sum(-1), 0.0)


# ------------------------------------------------------------------ multi-label scores (one sigmoid per label)

def _check_sigmoids(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N, C] per-label probabilities, got shape {p.shape}")
    return np.clip(p, EPS, 1 - EPS)


# ------------------------------------------------------------------ token tagging: sentences scored from their words
# ``probs`` [N, W, C]: a softmax over the tags per word position, NaN at the positions past a sentence's last word.

def _word_rows(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] < 2:
        raise ValueError(f"token strategies read probs [N, W, C] (a tag distribution per word), got shape {p.shape}")
    if len(p) and np.isnan(p[:, :, 0]).all(1).any():
        raise ValueError("a sentence without a word reached a token strategy")
    return p


def _gaps(probs: np.ndarray) -> np.ndarray:
    """``[N, W]``: each word's gap between its two most probable tags (NaN past the sentence)."""
    p = np.sort(_word_rows(probs), axis=-1)
    return p[..., -1] - p[..., -2]


def mean_token_margin(probs: np.ndarray) -> np.ndarray:
    """The sentence's mean top-2 gap over its words, negated: length-normalised, so a long sentence does not win
    by its length alone."""
    return -np.nanmean(_gaps(probs), axis=1)


def min_token_margin(probs: np.ndarray) -> np.ndarray:
    """The smallest top-2 gap among the sentence's words, negated: its least certain word decides."""
    return -np.nanmin(_gaps(probs), axis=1)


def mnlp(probs: np.ndarray) -> np.ndarray:
    """Maximum normalised log-probability (Shen et al., "Deep Active Learning for Named Entity Recognition", ICLR
    2018), negated: ``-(1/n) Σ_w log max_c p_wc``, the per-word log-probability of the most likely tagging (its
    words taken independently, as a softmax tagger predicts them); 0 for a certain sentence."""
    p = _word_rows(probs)
    return -np.nanmean(np.log(np.clip(p.max(-1), EPS, 1.0)), axis=1)


def mean_binary_entropy(probs: np.ndarray) -> np.ndarray:
    """Multi-label: the mean over labels of each label's binary entropy (Yang et al. 2009 sum it)."""
    p = _check_sigmoids(probs)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p)).mean(-1)


def threshold_margin(probs: np.ndarray) -> np.ndarray:
    """Multi-label: minus the distance of the label nearest its decision threshold (0.5) -- the example's
    least certain decision (the multi-label margin of Brinker 2006)."""
    return -np.abs(_check_sigmoids(probs) - 0.5).min(-1)


def cardinality(student_probs: np.ndarray, teacher_probs: np.ndarray) -> np.ndarray:
    """Multi-label teacher-student disagreement on how many labels an example has (expected counts)."""
    return np.abs(_check_sigmoids(student_probs).sum(-1) - _check_sigmoids(teacher_probs).sum(-1))


def neighbour_vote(queries: np.ndarray, reference: np.ndarray, labels: np.ndarray, num_labels: int, k: int = 10,
                   prior: float = 1.0) -> np.ndarray:
    """``[n, C]`` class probabilities of each query row from its ``k`` most cosine-similar ``reference`` rows,
    whose ``labels`` are known: each neighbour votes its label with weight ``1 + similarity`` (in [0, 2]),
    and ``prior`` votes are spread evenly over the classes, so no class is ever certain from a few votes."""
    queries, reference = np.asarray(queries, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full((len(queries), num_labels), prior / num_labels)
    if len(reference) == 0 or len(queries) == 0:
        return out / out.sum(1, keepdims=True)
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    ref = unit(reference)
    k = min(k, len(ref))
    for start in range(0, len(queries), 1024):  # memory: 1024 x |reference|
        sim = unit(queries[start:start + 1024]) @ ref.T
        near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        rows = np.arange(len(near))[:, None]
        np.add.at(out[start:start + 1024], (np.broadcast_to(rows, near.shape), labels[near]), 1.0 + sim[rows, near])
    return out / out.sum(1, keepdims=True)


# ------------------------------------------------------------------ one entry point

@dataclass
class PoolOutputs:
    """What the models said about the pool; each strategy reads the parts it needs.

    ``probs`` ``[N, C]`` student; ``mc_probs`` ``[T, N, C]`` MC-dropout passes; ``members``
    ``[M, N, C]`` committee; ``teacher_probs`` ``[N, C]``; ``embeddings`` ``[N, D]`` (the
    student's penultimate layer). Rows are pool positions; a part may hold only the
    candidates' rows when a strategy is scored in a streaming pass (see ``scores``).
    """

    n: int
    probs: Optional[np.ndarray] = None
    mc_probs: Optional[np.ndarray] = None
    members: Optional[np.ndarray] = None
    teacher_probs: Optional[np.ndarray] = None
    embeddings: Optional[np.ndarray] = None
    embedding_rows: Optional[np.ndarray] = None  # pool positions of the embeddings' rows (None: all N)
    scores: Optional[np.ndarray] = None  # precomputed [N] scores (streamed), else computed here


SCORES: dict[str, Callable[[PoolOutputs], np.ndarray]] = {
    "least_confidence": lambda o: least_confidence(o.probs),
    "margin": lambda o: margin(o.probs),
    "entropy": lambda o: entropy(o.probs),
    "bald": lambda o: bald(o.mc_probs),
    "vote_entropy": lambda o: vote_entropy(o.members),
    "committee_kl": lambda o: committee_kl(o.members),
    "disagreement": lambda o: disagreement(o.probs, o.teacher_probs),
    "mean_binary_entropy": lambda o: mean_binary_entropy(o.probs),
    "threshold_margin": lambda o: threshold_margin(o.probs),
    "cardinality": lambda o: cardinality(o.probs, o.teacher_probs),
    "mean_token_margin": lambda o: mean_token_margin(o.probs),
    "min_token_margin": lambda o: min_token_margin(o.probs),
    "mnlp": lambda o: mnlp(o.probs),
}

# selectors over the whole pool's outputs: (outputs, k, candidates, labelled, seed) -> positions, best first
Pick = Callable[[PoolOutputs, int, np.ndarray, np.ndarray, int], np.ndarray]
PICKS: dict[str, Pick] = {
    "random": lambda o, k, cands, labelled, seed: cands[order(len(cands), seed)[:k]],
    "coreset": lambda o, k, cands, labelled, seed: coreset(o.embeddings, labelled, k, cands),
    "badge": lambda o, k, cands, labelled, seed: badge(o.probs, o.embeddings, k, cands, seed),
}
STRATEGIES = ("random", *SCORES, "coreset", "badge")  # the built-in ones

# which outputs each strategy reads (the loop computes only those)
NEEDS = {
    "random": set(),
    "least_confidence": {"probs"}, "margin": {"probs"}, "entropy": {"probs"},
    "bald": {"mc_probs"},
    "vote_entropy": {"members"}, "committee_kl": {"members"},
    "disagreement": {"probs", "teacher_probs"},
    "coreset": {"embeddings"},
    "badge": {"probs", "embeddings"},
    "mean_binary_entropy": {"probs"}, "threshold_margin": {"probs"}, "cardinality": {"probs", "teacher_probs"},
    "mean_token_margin": {"probs"}, "min_token_margin": {"probs"}, "mnlp": {"probs"},
}
# the task kinds each strategy's scores mean something for (softmax class probabilities, or one sigmoid per label)
MULTILABEL = ("mean_binary_entropy", "threshold_margin", "cardinality")
TOKENS = ("mean_token_margin", "min_token_margin", "mnlp")  # sentences scored from their words' tag distributions
TASKS_OF = {name: ("classification", "multilabel", "tokens") if name == "random" else
            ("classification", "multilabel") if name == "coreset" else ("multilabel",) if name in MULTILABEL else
            ("tokens",) if name in TOKENS else ("classification",) for name in NEEDS}
OUTPUTS = ("probs", "mc_probs", "members", "teacher_probs", "embeddings")
PICK_OUTPUTS = ("probs", "embeddings")  # what a scoring pass keeps for every pool row


def names(task: Optional[str] = None) -> tuple[str, ...]:
    """Every strategy :func:`select` knows (for ``task``, those meant for it): built-in, then registered."""
    return tuple(n for n in NEEDS if task is None or task in TASKS_OF[n])


def register_strategy(name: str, score: Optional[Callable[[PoolOutputs], np.ndarray]] = None, *,
                      pick: Optional[Pick] = None, needs=("probs",), tasks=("classification",),
                      replace: bool = False) -> str:
    """Make a strategy of your own available by ``name`` to :func:`select`, ``kdflow active``
    (``active.strategy: NAME``; ``active.strategy_modules`` imports the module that registers it) and
    ``compare_strategies``.

    Give exactly one of ``score(outputs) -> [n]`` (higher = more worth a label; the pool is scored in streamed
    chunks, so it sees one chunk's rows at a time, and ``active.diversity`` applies) or ``pick(outputs, k,
    candidates, labelled, seed) -> positions`` (best first; sees the whole pool's rows, of ``probs`` and
    ``embeddings`` only). ``needs``: the :class:`PoolOutputs` parts it reads (``probs``, ``mc_probs``,
    ``members``, ``teacher_probs``, ``embeddings``); the loop computes only those. ``tasks``: the task kinds its
    scores mean something for (``probs`` are softmax class probabilities under classification, one sigmoid per
    label under multilabel). Returns ``name``."""
    if (score is None) == (pick is None):
        raise ValueError("register_strategy takes either score= or pick=, exactly one")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("register_strategy needs a non-empty name")
    needs = set(needs)
    unknown = sorted(needs - set(OUTPUTS))
    if unknown:
        raise ValueError(f"strategy {name!r} needs {unknown[0]!r}, which no pool pass computes; needs is a subset "
                         f"of {', '.join(OUTPUTS)}")
    if pick is not None and needs - set(PICK_OUTPUTS):
        raise ValueError(f"strategy {name!r} picks from the whole pool, whose pass keeps only "
                         f"{' and '.join(PICK_OUTPUTS)}; write it as score= to read {sorted(needs)[0]}")
    if name in NEEDS and (name in STRATEGIES or not replace):
        raise ValueError(f"strategy {name!r} is already registered"
                         + ("" if name in STRATEGIES else "; pass replace=True to redefine it"))
    SCORES.pop(name, None)
    PICKS.pop(name, None)
    (SCORES if score is not None else PICKS)[name] = score if score is not None else pick
    NEEDS[name] = needs
    TASKS_OF[name] = tuple(tasks)
    return name


def score(strategy: str, outputs: PoolOutputs) -> np.ndarray:
    """``[n]`` scores of score-based ``strategy`` for the ``n`` rows of ``outputs`` (held to that shape)."""
    s = np.asarray(SCORES[strategy](outputs), dtype=np.float64)
    if s.shape != (outputs.n,):
        raise ValueError(f"strategy {strategy!r} returned scores of shape {s.shape} for {outputs.n} examples; a "
                         f"score must return one number per row, shape ({outputs.n},)")
    return s


def select(strategy: str, outputs: PoolOutputs, k: int, candidates: np.ndarray, labelled: np.ndarray,
           seed: int = 0, diversity: int = 1) -> np.ndarray:
    """Pick ``k`` distinct pool positions among ``candidates`` (best first).

    ``labelled`` (pool positions already labelled) matters to core-set only; every
    strategy picks from ``candidates`` alone. ``diversity`` > 1 turns a score-based
    strategy into :func:`diverse_top_k` with that pre-filter factor (needs embeddings).
    Deterministic for a given ``seed``.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if k <= 0 or len(candidates) == 0:
        return np.array([], dtype=np.int64)
    if strategy not in NEEDS:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(names())}")
    missing = [part for part in NEEDS[strategy] if getattr(outputs, part) is None and outputs.scores is None]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs {', '.join(sorted(missing))} in the pool outputs")
    if strategy in PICKS:
        return _checked(strategy, PICKS[strategy](outputs, k, candidates, np.asarray(labelled, dtype=np.int64), seed),
                        k, candidates)
    scores = outputs.scores if outputs.scores is not None else score(strategy, outputs)
    if diversity > 1:
        if outputs.embeddings is None:
            raise ValueError("batch-mode diversity needs the pool embeddings")
        return diverse_top_k(scores, outputs.embeddings, k, candidates, diversity, seed, outputs.embedding_rows)
    return top_k(scores, k, candidates, seed)


def _checked(strategy: str, picked, k: int, candidates: np.ndarray) -> np.ndarray:
    """A selector's answer held to the contract: at most ``k`` distinct candidates."""
    picked = np.asarray(picked, dtype=np.int64).reshape(-1)
    if len(picked) > k or len(np.unique(picked)) < len(picked) or not np.isin(picked, candidates).all():
        raise ValueError(f"strategy {strategy!r} returned {len(picked)} positions that are not {k} or fewer distinct "
                         "candidates; a pick must return distinct positions from candidates")
    return picked


__all__ = ["PoolOutputs", "STRATEGIES", "SCORES", "PICKS", "NEEDS", "OUTPUTS", "TASKS_OF", "mean_binary_entropy",
           "threshold_margin", "cardinality", "names", "register_strategy", "score",
           "select", "least_confidence", "margin", "entropy", "bald", "vote_entropy", "committee_kl", "disagreement",
           "neighbour_vote", "check_probs", "tie_keys", "top_k", "min_sq_dist", "k_centre_greedy", "diverse_top_k",
           "coreset", "badge", "order"]
