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
=================  ==========================================  ===========================================

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

EPS = 1e-12


# ------------------------------------------------------------------ scores

def _check_probs(p: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] < 2:
        raise ValueError(f"{name} must be [..., N, C] with C >= 2 classes, got shape {p.shape}")
    return p


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c``: 0 for a certain prediction, ``1 - 1/C`` for a uniform one."""
    p = _check_probs(probs)
    return 1.0 - p.max(-1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Negated gap between the two most probable classes: near 0 = a coin flip between two."""
    p = np.sort(_check_probs(probs), axis=-1)
    return -(p[..., -1] - p[..., -2])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum p log p`` (nats): 0 for one-hot, ``log C`` for uniform."""
    p = _check_probs(probs)
    return -(p * np.log(np.clip(p, EPS, 1.0))).sum(-1)


def bald(mc_probs: np.ndarray) -> np.ndarray:
    """Mutual information between the prediction and the weights, from ``[T, N, C]`` MC-dropout
    samples: the entropy of the mean minus the mean entropy. High when the passes are each
    confident but disagree (epistemic), low when they agree, however flat (aleatoric)."""
    p = _check_probs(mc_probs, "mc_probs")
    if p.ndim != 3:
        raise ValueError(f"mc_probs must be [T, N, C] (MC passes, examples, classes), got shape {p.shape}")
    return np.maximum(entropy(p.mean(0)) - entropy(p).mean(0), 0.0)


def vote_entropy(member_probs: np.ndarray) -> np.ndarray:
    """Entropy of the committee's hard votes (``[M, N, C]`` member probabilities)."""
    p = _check_probs(member_probs, "member_probs")
    if p.ndim != 3:
        raise ValueError(f"member_probs must be [M, N, C] (members, examples, classes), got shape {p.shape}")
    votes = p.argmax(-1)  # [M, N]
    counts = np.stack([(votes == c).sum(0) for c in range(p.shape[-1])], -1) / p.shape[0]  # [N, C]
    return entropy(counts)


def committee_kl(member_probs: np.ndarray) -> np.ndarray:
    """Mean KL divergence of each member from the committee's consensus (``[M, N, C]``)."""
    p = _check_probs(member_probs, "member_probs")
    if p.ndim != 3:
        raise ValueError(f"member_probs must be [M, N, C] (members, examples, classes), got shape {p.shape}")
    mean = p.mean(0, keepdims=True)
    kl = (p * (np.log(np.clip(p, EPS, 1.0)) - np.log(np.clip(mean, EPS, 1.0)))).sum(-1)
    return np.maximum(kl.mean(0), 0.0)


def disagreement(student_probs: np.ndarray, teacher_probs: np.ndarray) -> np.ndarray:
    """``KL(p_teacher || p_student)``: where the student has not yet learnt what the teacher knows."""
    s, t = _check_probs(student_probs), _check_probs(teacher_probs, "teacher_probs")
    if s.shape != t.shape:
        raise ValueError(f"student and teacher probabilities differ in shape: {s.shape} vs {t.shape}")
    return np.maximum((t * (np.log(np.clip(t, EPS, 1.0)) - np.log(np.clip(s, EPS, 1.0)))).sum(-1), 0.0)


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


# ------------------------------------------------------------------ selectors

def _order(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def tie_keys(positions: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random key per pool position, the same whichever subset asks: equal
    scores are broken by it, in :func:`top_k` and in a streamed short list alike."""
    positions = np.asarray(positions, dtype=np.uint64)
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
        x = positions * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(31)  # splitmix-style mixing: cheap, stateless, well spread
        x *= np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(29))


def top_k(scores: np.ndarray, k: int, candidates: np.ndarray, seed: int = 0) -> np.ndarray:
    """The ``k`` candidates with the highest scores, best first; equal scores in a seeded order."""
    candidates = np.asarray(candidates, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)[candidates]
    if np.isnan(s).any():
        raise ValueError("scores hold NaN; the model's outputs are not finite")
    rank = np.lexsort((tie_keys(candidates, seed), -s))  # by score descending, then by the seeded key
    return candidates[rank[:k]]


def _sq_dists(x: np.ndarray, centres: np.ndarray, x_sq: Optional[np.ndarray] = None) -> np.ndarray:
    """Squared Euclidean distances ``[N, M]`` by ``|x|² + |c|² - 2 x·c`` (clipped at 0)."""
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    d = x_sq[:, None] + (centres * centres).sum(1)[None, :] - 2.0 * (x @ centres.T)
    return np.maximum(d, 0.0)


def min_sq_dist(x: np.ndarray, centres: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``min_j |x_i - c_j|²`` for every row of ``x``, computed in chunks of centres and rows:
    memory ``chunk x chunk`` floats whatever ``N`` and ``M``."""
    x = np.asarray(x, dtype=np.float32)
    centres = np.asarray(centres, dtype=np.float32)
    out = np.full(len(x), np.inf, dtype=np.float32)
    if len(centres) == 0:
        return out
    x_sq = (x * x).sum(1)
    for i in range(0, len(x), chunk):
        rows, rows_sq = x[i:i + chunk], x_sq[i:i + chunk]
        for j in range(0, len(centres), chunk):
            d = _sq_dists(rows, centres[j:j + chunk], rows_sq)
            np.minimum(out[i:i + chunk], d.min(1), out=out[i:i + chunk])
    return out


def k_centre_greedy(x: np.ndarray, k: int, start_dist: np.ndarray, first: Optional[int] = None) -> list[int]:
    """Greedy k-centre: repeatedly take the row farthest from everything chosen so far.

    ``start_dist``: squared distance of each row to the already covered set (``inf`` when
    nothing is covered yet). ``first``: the row to take first (else the farthest).
    One pass of ``O(N·D)`` per pick.
    """
    x = np.asarray(x, dtype=np.float32)
    dist = np.array(start_dist, dtype=np.float32, copy=True)
    x_sq = (x * x).sum(1)
    chosen: list[int] = []
    for step in range(min(k, len(x))):
        if step == 0 and first is not None:
            i = int(first)
        else:
            dist[chosen] = -1.0
            i = int(np.argmax(dist))
        chosen.append(i)
        d = np.maximum(x_sq + x_sq[i] - 2.0 * (x @ x[i]), 0.0)
        np.minimum(dist, d, out=dist)
    return chosen


def diverse_top_k(scores: np.ndarray, embeddings: np.ndarray, k: int, candidates: np.ndarray, factor: int = 10,
                  seed: int = 0, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Batch-mode diversity: among the ``factor * k`` best-scored candidates, greedy k-centre on
    their embeddings, starting from the best score. ``factor = 1`` is plain :func:`top_k`.

    ``rows``: the pool positions whose embeddings ``embeddings`` holds, in order (a streaming
    pass keeps only the best-scored ones); ``None`` means every pool position.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        candidates = candidates[np.isin(candidates, rows)]
    short = top_k(scores, max(k, factor * k), candidates, seed)
    if len(short) <= k or factor <= 1:
        return short[:k]
    if rows is None:
        emb = np.asarray(embeddings, dtype=np.float32)[short]
    else:
        where = {int(p): i for i, p in enumerate(rows)}
        emb = np.asarray(embeddings, dtype=np.float32)[[where[int(p)] for p in short]]
    picked = k_centre_greedy(emb, k, np.full(len(short), np.inf, dtype=np.float32), first=0)
    return short[picked]


def coreset(embeddings: np.ndarray, labelled: np.ndarray, k: int, candidates: np.ndarray,
            chunk: int = 4096) -> np.ndarray:
    """Greedy k-centre core-set (Sener & Savarese 2018): each pick is the candidate farthest from
    the labelled set and from the picks before it. ``embeddings`` covers the whole pool."""
    candidates = np.asarray(candidates, dtype=np.int64)
    emb = np.asarray(embeddings, dtype=np.float32)
    cand = emb[candidates]
    start = min_sq_dist(cand, emb[np.asarray(labelled, dtype=np.int64)], chunk)
    if not np.isfinite(start).any():  # nothing labelled yet: start from the candidate nearest the mean
        first = int(np.argmin(((cand - cand.mean(0)) ** 2).sum(1)))
        return candidates[k_centre_greedy(cand, k, start, first=first)]
    return candidates[k_centre_greedy(cand, k, start)]


def badge(probs: np.ndarray, hidden: np.ndarray, k: int, candidates: np.ndarray, seed: int = 0) -> np.ndarray:
    """BADGE (Ash et al. 2020): k-means++ seeding on the last layer's gradient embeddings
    ``g_i = (p_i - e_yhat_i) ⊗ h_i`` under the model's own predicted label.

    ``|g_i - g_j|² = |a_i|²|h_i|² + |a_j|²|h_j|² - 2 (a_i·a_j)(h_i·h_j)`` with ``a = p - e_yhat``,
    so each step is ``O(N·(C + D))`` and the ``N x C·D`` matrix is never formed. The first
    centre is the largest gradient (the most uncertain and most surprising point); the rest
    are drawn with probability proportional to the squared distance to the chosen centres.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    p = _check_probs(np.asarray(probs)[candidates])  # index first: only the candidates' rows are copied
    h = np.asarray(hidden)[candidates].astype(np.float64)
    a = p.copy()
    a[np.arange(len(a)), p.argmax(1)] -= 1.0
    a_sq, h_sq = (a * a).sum(1), (h * h).sum(1)
    norm = a_sq * h_sq
    rng = np.random.default_rng(seed)
    chosen = [int(np.argmax(norm))]
    dist = np.full(len(candidates), np.inf)
    for _ in range(min(k, len(candidates)) - 1):
        c = chosen[-1]
        d = np.maximum(norm + norm[c] - 2.0 * (a @ a[c]) * (h @ h[c]), 0.0)
        np.minimum(dist, d, out=dist)
        dist[chosen] = 0.0
        total = dist.sum()
        if total <= 0:  # every remaining candidate coincides with a centre: take the next unseen one
            rest = np.setdiff1d(np.arange(len(candidates)), chosen)
            chosen.append(int(rest[rng.integers(len(rest))]))
            continue
        chosen.append(int(rng.choice(len(candidates), p=dist / total)))
    return candidates[chosen]


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
}
STRATEGIES = ("random", *SCORES, "coreset", "badge")

# which outputs each strategy reads (the loop computes only those)
NEEDS = {
    "random": set(),
    "least_confidence": {"probs"}, "margin": {"probs"}, "entropy": {"probs"},
    "bald": {"mc_probs"},
    "vote_entropy": {"members"}, "committee_kl": {"members"},
    "disagreement": {"probs", "teacher_probs"},
    "coreset": {"embeddings"},
    "badge": {"probs", "embeddings"},
}


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
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    missing = [part for part in NEEDS[strategy] if getattr(outputs, part) is None and outputs.scores is None]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs {', '.join(sorted(missing))} in the pool outputs")
    if strategy == "random":
        return candidates[_order(len(candidates), seed)[:k]]
    if strategy == "coreset":
        return coreset(outputs.embeddings, labelled, k, candidates)
    if strategy == "badge":
        return badge(outputs.probs, outputs.embeddings, k, candidates, seed)
    scores = outputs.scores if outputs.scores is not None else SCORES[strategy](outputs)
    if diversity > 1:
        if outputs.embeddings is None:
            raise ValueError("batch-mode diversity needs the pool embeddings")
        return diverse_top_k(scores, outputs.embeddings, k, candidates, diversity, seed, outputs.embedding_rows)
    return top_k(scores, k, candidates, seed)
