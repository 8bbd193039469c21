"""Batch selectors: the ``k`` best scores (ties broken by a seeded order), batch-mode diversity, core-set and
BADGE, on plain numpy arrays (see :mod:`kdflow.active.strategies` for what each is and where it comes from).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

EPS = 1e-12


def check_probs(p: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] < 2:
        raise ValueError(f"{name} must be [..., N, C] with C >= 2 classes, got shape {p.shape}")
    return p


def order(n: int, seed: int) -> np.ndarray:
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
    p = check_probs(np.asarray(probs)[candidates])  # index first: only the candidates' rows are copied
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


__all__ = ["check_probs", "tie_keys", "top_k", "min_sq_dist", "k_centre_greedy", "diverse_top_k", "coreset",
           "badge", "order"]
