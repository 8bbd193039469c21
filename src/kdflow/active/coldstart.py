"""The cold start: which examples to label first, before a student is worth asking.

With few labels, a barely trained model's uncertainty is noise, and uncertainty sampling then does worse
than random (Hacohen, Dekel & Weinshall, "Active Learning on a Budget", ICML 2022). The first labels should
rather cover the pool's dense regions. Two seeds that need no gold labels, computed on the **teacher's**
view of the pool (its penultimate-layer embeddings and its predictions):

* ``typicality`` (TypiClust): k-means of the pool's embeddings into ``|labelled| + k`` clusters; from each
  of the ``k`` largest clusters that hold no labelled example, its most typical candidate, where
  ``typicality(x) = 1 / mean distance to its knn nearest neighbours within the cluster``.
* ``balanced``: the same number of candidates per class of the teacher's predictions (round-robin over the
  classes, each class's members in a seeded order): a class-balanced seed set without gold labels.

``active.cold_start_labels``: until the labelled set holds that many examples, every batch is chosen this
way (typicality's clusters grow with the labelled set); from then on, ``active.strategy`` chooses.
"""

from __future__ import annotations

import numpy as np

COLD_STARTS = ("typicality", "balanced")
KNN = 20  # neighbours that define typicality (TypiClust's value)


def typical_member(points: np.ndarray, knn: int = KNN, block: int = 1024) -> int:
    """Index of the most typical row of ``points``: the smallest mean distance to its ``knn`` nearest others.
    Distances are computed ``block`` rows at a time, so memory stays ``block x n`` for a cluster of any size."""
    n = len(points)
    if n <= 2:
        return 0
    points = np.asarray(points, dtype=np.float64)
    sq = (points ** 2).sum(1)
    m = min(knn, n - 1)
    typical = np.empty(n)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        d = np.sqrt(np.maximum(sq[rows, None] + sq[None, :] - 2.0 * points[rows] @ points.T, 0.0))
        d[np.arange(d.shape[0]), np.arange(rows.start, rows.stop)] = np.inf  # not its own neighbour
        typical[rows] = np.partition(d, m - 1, axis=1)[:, :m].mean(1)
    return int(np.argmin(typical))


def clusters(emb: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels of ``emb`` (mini-batch k-means beyond 50 clusters, as TypiClust does)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    n_clusters = max(1, min(n_clusters, len(emb)))
    algo = KMeans(n_clusters, n_init=1, random_state=seed) if n_clusters <= 50 else \
        MiniBatchKMeans(n_clusters, n_init=1, random_state=seed, batch_size=max(1024, 3 * n_clusters))
    return algo.fit_predict(np.asarray(emb, dtype=np.float32))


def typicality(emb: np.ndarray, k: int, candidates: np.ndarray, labelled: np.ndarray, seed: int = 0,
               knn: int = KNN) -> np.ndarray:
    """``k`` candidate positions: the most typical candidate of each of the ``k`` largest clusters without a
    labelled example (``emb``: ``[N, D]`` for every pool position; clusters over candidates and labelled)."""
    candidates, labelled = np.asarray(candidates, np.int64), np.asarray(labelled, np.int64)
    k = min(k, len(candidates))
    if k <= 0:
        return np.zeros(0, np.int64)
    rows = np.concatenate([labelled, candidates])
    assign = clusters(emb[rows], len(labelled) + k, seed)
    covered = set(assign[:len(labelled)].tolist())
    cand_assign = assign[len(labelled):]
    sizes = np.bincount(assign, minlength=assign.max() + 1)
    # largest uncovered clusters first; equal sizes in cluster order (k-means' own, seeded)
    order = [c for c in np.argsort(-sizes, kind="stable") if c not in covered and (cand_assign == c).any()]
    picked = []
    for c in order[:k]:
        members = candidates[cand_assign == c]
        picked.append(int(members[typical_member(emb[members], knn)]))
    if len(picked) < k:  # fewer uncovered clusters than asked for: the rest at random (seeded)
        rest = np.setdiff1d(candidates, picked)
        picked += rest[np.random.default_rng(seed).permutation(len(rest))[:k - len(picked)]].tolist()
    return np.asarray(picked, dtype=np.int64)


def balanced(predicted: np.ndarray, k: int, candidates: np.ndarray, seed: int = 0) -> np.ndarray:
    """``k`` candidate positions spread evenly over the predicted classes (``predicted``: ``[N]`` for every
    pool position): round-robin over the classes, each class's candidates in a seeded order."""
    candidates = np.asarray(candidates, np.int64)
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(candidates[predicted[candidates] == c]))
              for c in np.unique(predicted[candidates])]
    picked: list[int] = []
    while len(picked) < min(k, len(candidates)):
        for q in queues:
            if q and len(picked) < k:
                picked.append(int(q.pop(0)))
    return np.asarray(picked, dtype=np.int64)


def teacher_view(ctx):
    """The teacher's embeddings and probabilities for every pool position: one pass (split across processes
    under torchrun), so the teacher sees each pool example once; counted as teacher queries. Under
    ``target: teacher_calls``, where those calls are the budget, the untrained student's view instead."""
    from .. import pipeline
    from ..tasks import task_kind
    from .outputs import PoolPass, stream_pool
    ac = ctx.ac
    spec = PoolPass("badge", len(ctx.labels), ac.pool_batch_size, ac.pool_chunk, seed=ac.seed,
                    activation=task_kind(ctx.run.data.task).activation)
    calls = ac.target == "teacher_calls"
    model, tok = (ctx.template, ctx.s_tokenizer) if calls else (ctx.teacher, ctx.tokenizer)
    view = stream_pool(model, ctx.pool, np.arange(len(ctx.pool)),
                       lambda: pipeline.featurizer(ctx.run, tok), ctx.run.acc.device, spec)
    model.cpu()  # the template is copied for every round's student, on the CPU
    if not calls:
        ctx.state.note_teacher(list(ctx.pool.ids))
    return view


def pick_for(ctx, k: int, candidates: np.ndarray) -> np.ndarray:
    """The next ``k`` of the run's candidates by its cold-start strategy (the teacher's view computed once per
    teacher: under target teacher, the newest fine-tuned one, resumed or not)."""
    key = len(ctx.state.rounds) - 1 if ctx.ac.target == "teacher" else -1
    ctx.use_teacher_of(key)
    if ctx.teacher_view is None or ctx.teacher_view_round != key:
        ctx.teacher_view, ctx.teacher_view_round = teacher_view(ctx), key
    seed = ctx.ac.seed * 100_003 + len(ctx.state.batches)
    return cold_start_pick(ctx.ac.initial_strategy, ctx.teacher_view, k, candidates,
                           ctx.state.labelled_positions, seed)


def cold_start_pick(name: str, view, k: int, candidates: np.ndarray, labelled: np.ndarray, seed: int
                    ) -> np.ndarray:
    """The cold-start selector ``name`` on the teacher's ``view`` (:class:`PoolOutputs` with ``embeddings``
    and ``probs`` for every pool position)."""
    if name == "typicality":
        return typicality(view.embeddings, k, candidates, labelled, seed)
    return balanced(view.probs.argmax(1), k, candidates, seed)


__all__ = ["COLD_STARTS", "typical_member", "clusters", "typicality", "balanced", "cold_start_pick", "teacher_view",
           "pick_for", "KNN"]
