"""Query strategies: analytic values of each score, and one contract every strategy must pass."""

import numpy as np
import pytest

import user_strategies  # noqa: F401  (registers user_margin and user_far, which the contract covers too)
from kdflow.active import strategies as st
from kdflow.active.strategies import STRATEGIES, PoolOutputs, select

N, C, T, M = 40, 3, 8, 4
UNSURE = 7          # the obviously uncertain example: flat, disagreeing, far from everything
LABELLED = np.array([0, 1, 2, 3, 20, 21])
IGNORED = {5}


def hand_made_pool() -> PoolOutputs:
    """Confident, mutually agreeing outputs everywhere except at UNSURE; embeddings in three
    tight clusters (around labelled points), UNSURE far away from all of them."""
    rng = np.random.default_rng(0)
    cls = np.arange(N) % C
    probs = np.full((N, C), 0.02)
    probs[np.arange(N), cls] = 0.96
    probs[UNSURE] = 1.0 / C
    mc = np.repeat(probs[None], T, 0)
    members = np.repeat(probs[None], M, 0)
    for t in range(T):  # the MC passes and the members are each sure of a different class at UNSURE
        mc[t, UNSURE] = np.eye(C)[t % C] * 0.94 + 0.02
    for m in range(M):
        members[m, UNSURE] = np.eye(C)[m % C] * 0.94 + 0.02
    teacher = probs.copy()
    teacher[UNSURE] = [0.96, 0.02, 0.02]
    centres = np.eye(16)[:C] * 5.0
    emb = centres[cls] + rng.normal(0, 0.05, (N, 16))
    emb[UNSURE] = 40.0
    return PoolOutputs(n=N, probs=probs, mc_probs=mc, members=members, teacher_probs=teacher, embeddings=emb)


def candidates() -> np.ndarray:
    return np.asarray([i for i in range(N) if i not in set(LABELLED) | IGNORED])


# ------------------------------------------------------------------ the shared contract

@pytest.mark.parametrize("strategy", STRATEGIES + ("user_margin", "user_far"))
def test_contract(strategy):
    out, cands = hand_made_pool(), candidates()
    if st.TASKS_OF[strategy] == ("tokens",):  # sentences of 1-3 words (NaN past the last), unsure words at UNSURE
        words = np.repeat(out.probs[:, None], 3, 1)
        for i in range(N):
            words[i, 1 + i % 3:] = np.nan
        out.probs = words
    elif "classification" not in st.TASKS_OF[strategy]:  # per-label sigmoids: the teacher expects more labels at UNSURE
        out.teacher_probs = out.probs.copy()
        out.teacher_probs[UNSURE] = 0.9
    picked = select(strategy, out, 10, cands, LABELLED, seed=3)
    # k distinct positions, all candidates: never labelled, never ignored
    assert len(picked) == 10 and len(set(picked.tolist())) == 10
    assert set(picked.tolist()) <= set(cands.tolist())
    assert not set(picked.tolist()) & (set(LABELLED.tolist()) | IGNORED)
    # deterministic under the seed
    np.testing.assert_array_equal(picked, select(strategy, out, 10, cands, LABELLED, seed=3))
    # asking for more than there is returns every candidate once
    everything = select(strategy, out, 10_000, cands, LABELLED, seed=3)
    assert sorted(everything.tolist()) == sorted(cands.tolist())
    assert len(select(strategy, out, 0, cands, LABELLED)) == 0
    if strategy != "random":  # random cannot prefer anything: that is its point
        assert select(strategy, out, 1, cands, LABELLED, seed=3)[0] == UNSURE, strategy


def test_random_depends_on_the_seed_only():
    out, cands = hand_made_pool(), candidates()
    a = select("random", out, 10, cands, LABELLED, seed=1)
    assert not np.array_equal(a, select("random", out, 10, cands, LABELLED, seed=2))
    np.testing.assert_array_equal(a, select("random", PoolOutputs(n=N), 10, cands, LABELLED, seed=1))


def test_select_names_missing_outputs_and_unknown_strategies():
    with pytest.raises(ValueError, match="needs mc_probs"):
        select("bald", PoolOutputs(n=N, probs=hand_made_pool().probs), 2, candidates(), LABELLED)
    with pytest.raises(ValueError, match="unknown strategy"):
        select("entropyy", hand_made_pool(), 2, candidates(), LABELLED)


# ------------------------------------------------------------------ analytic values

def test_uncertainty_scores_on_known_distributions():
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0], [0.7, 0.2, 0.1, 0.0]])
    np.testing.assert_allclose(st.entropy(p), [0.0, np.log(4), np.log(2), -(0.7 * np.log(0.7) + 0.2 * np.log(0.2)
                                                                           + 0.1 * np.log(0.1))], atol=1e-9)
    np.testing.assert_allclose(st.least_confidence(p), [0.0, 0.75, 0.5, 0.3])
    np.testing.assert_allclose(st.margin(p), [-1.0, 0.0, 0.0, -0.5])
    # the orderings agree on the extremes: the one-hot row is the least informative for all three
    for fn in (st.entropy, st.least_confidence, st.margin):
        assert np.argmin(fn(p)) == 0


def test_bald_separates_epistemic_from_aleatoric_uncertainty():
    flat = np.full((5, 1, 2), 0.5)                             # every pass unsure, and they agree: aleatoric
    split = np.array([[[1.0, 0.0]], [[0.0, 1.0]]] * 2 + [[[1.0, 0.0]]])  # passes sure but disagree: epistemic
    assert st.bald(flat)[0] == pytest.approx(0.0, abs=1e-9)
    # H(mean) = H(3/5, 2/5), mean H = 0
    assert st.bald(split)[0] == pytest.approx(-(0.6 * np.log(0.6) + 0.4 * np.log(0.4)), abs=1e-6)
    with pytest.raises(ValueError, match=r"\[T, N, C\]"):
        st.bald(np.full((3, 2), 0.5))


def test_committee_scores():
    agree = np.repeat(np.array([[[0.9, 0.1]]]), 4, 0)
    votes = np.array([[[0.9, 0.1]], [[0.8, 0.2]], [[0.1, 0.9]], [[0.2, 0.8]]])  # 2 vs 2
    assert st.vote_entropy(agree)[0] == pytest.approx(0.0)
    assert st.vote_entropy(votes)[0] == pytest.approx(np.log(2))
    assert st.committee_kl(agree)[0] == pytest.approx(0.0, abs=1e-12)
    mean = votes.mean(0)[0]
    kl = np.mean([(v[0] * np.log(v[0] / mean)).sum() for v in votes])
    assert st.committee_kl(votes)[0] == pytest.approx(kl)


def test_disagreement_is_kl_teacher_to_student():
    s = np.array([[0.5, 0.5], [0.9, 0.1]])
    t = np.array([[0.9, 0.1], [0.9, 0.1]])
    want = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    np.testing.assert_allclose(st.disagreement(s, t), [want, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="differ in shape"):
        st.disagreement(s, t[:1])


# ------------------------------------------------------------------ selectors

def test_top_k_breaks_ties_by_seed_and_refuses_nan():
    scores = np.array([1.0, 5.0, 5.0, 5.0, 0.0])
    assert st.top_k(scores, 1, np.arange(5))[0] in (1, 2, 3)
    assert set(st.top_k(scores, 3, np.arange(5), seed=0).tolist()) == {1, 2, 3}
    flat = np.zeros(200)  # all tied: the seed decides, not the position
    firsts = {tuple(st.top_k(flat, 5, np.arange(200), seed=s)) for s in range(5)}
    assert len(firsts) == 5 and (0, 1, 2, 3, 4) not in firsts
    # a tie is broken the same way whichever subset of candidates is asked
    a = st.top_k(flat, 200, np.arange(200), seed=3)
    sub = st.top_k(flat, 50, np.arange(100, 150), seed=3)
    np.testing.assert_array_equal(sub, [x for x in a if 100 <= x < 150])
    with pytest.raises(ValueError, match="NaN"):
        st.top_k(np.array([np.nan, 1.0]), 1, np.arange(2))


def test_diversity_avoids_near_duplicates():
    """Ten near-copies score highest; plain top-k takes them all, the diverse batch takes one."""
    rng = np.random.default_rng(0)
    emb = np.concatenate([np.zeros((10, 4)) + rng.normal(0, 1e-3, (10, 4)), rng.normal(0, 3, (30, 4)) + 10])
    scores = np.concatenate([np.full(10, 1.0) + rng.uniform(0, 1e-3, 10), rng.uniform(0.5, 0.9, 30)])
    cands = np.arange(40)
    plain = st.top_k(scores, 5, cands)
    assert set(plain.tolist()) <= set(range(10))
    diverse = st.diverse_top_k(scores, emb, 5, cands, factor=8)
    assert diverse[0] == plain[0]                      # starts from the best score
    assert len(set(diverse.tolist()) & set(range(10))) == 1
    # a streamed short list holds only the factor * k = 25 best rows; the batch is the one
    # diverse_top_k picks with every row at hand
    rows = np.sort(st.top_k(scores, 25, cands))
    assert len(rows) < len(cands)
    again = st.diverse_top_k(scores, emb[rows], 5, cands, factor=5, rows=rows)
    np.testing.assert_array_equal(again, st.diverse_top_k(scores, emb, 5, cands, factor=5))
    assert len(set(again.tolist()) & set(range(10))) == 1


def test_chunked_min_distance_equals_brute_force():
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=(257, 7)), rng.normal(size=(61, 7))
    brute = ((x[:, None, :] - c[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(st.min_sq_dist(x, c, chunk=16), brute, rtol=1e-4, atol=1e-4)


def test_coreset_takes_the_farthest_point_then_covers_the_rest():
    pts = np.array([[0, 0], [0.1, 0], [0, 0.1], [10, 0], [10.1, 0], [0, 8], [5, 5]], dtype=float)
    picked = st.coreset(pts, np.array([0]), 3, np.arange(1, 7))
    # (10.1, 0) is farthest from the labelled origin; then (0, 8): 64 from the origin, while (5, 5) is 50
    # from it; then (5, 5), 34 from (0, 8), while (10, 0) sits 0.01 from a pick
    np.testing.assert_array_equal(picked, [4, 5, 6])


def test_badge_matches_explicit_gradient_embeddings():
    """The factorised distance must reproduce k-means++ on the explicit (p - e_yhat) ⊗ h vectors."""
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=60)
    hidden = rng.normal(size=(60, 5))
    cands = np.arange(60)
    a = probs.copy()
    a[np.arange(60), probs.argmax(1)] -= 1
    g = (a[:, :, None] * hidden[:, None, :]).reshape(60, -1)
    ref_rng = np.random.default_rng(9)
    chosen = [int(np.argmax((g * g).sum(1)))]
    dist = np.full(60, np.inf)
    for _ in range(7):
        dist = np.minimum(dist, ((g - g[chosen[-1]]) ** 2).sum(1))
        dist[chosen] = 0
        chosen.append(int(ref_rng.choice(60, p=dist / dist.sum())))
    np.testing.assert_array_equal(st.badge(probs, hidden, 8, cands, seed=9), chosen)


def test_core_set_and_badge_on_a_large_pool_never_build_a_pool_by_pool_matrix():
    """A 20k x 64 pool (bench/active_scale.py times 100k x 384): an N x N distance matrix would take
    1.6 GB and an N x (C·D) BADGE matrix 41 MB; numpy's allocations, traced, stay far below both."""
    import tracemalloc
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(20_000, 64)).astype(np.float32)
    probs = rng.dirichlet(np.ones(8), size=20_000)
    labelled = np.arange(500)
    cands = np.arange(500, 20_000)
    tracemalloc.start()
    a = st.coreset(emb, labelled, 50, cands, chunk=1024)
    core_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    b = st.badge(probs, emb, 50, cands)
    badge_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(set(a.tolist())) == 50 and len(set(b.tolist())) == 50
    assert not set(a.tolist()) & set(labelled.tolist())
    mb = 2 ** 20
    assert core_peak < 40 * mb, core_peak / mb     # candidate copy (5 MB) + 1024 x 1024 chunks, not 1.6 GB
    assert badge_peak < 30 * mb, badge_peak / mb   # [N, C] + [N, D] in float64 (~13 MB), not 41 MB more


def test_a_strategy_named_twice_is_refused_before_any_run(tmp_path):
    from kdflow.active import compare_strategies
    from kdflow.errors import KdflowError
    with pytest.raises(KdflowError, match="names 'random' twice"):
        compare_strategies({"data": {"path": "x.json"}, "run": {"output_dir": str(tmp_path)}},
                           ["random", "entropy", "random"], seeds=1)
    assert not any(tmp_path.iterdir())


def test_pool_reductions_are_plain_numpy():
    """The reductions of a streamed pool pass need no model: a committee is stacked, scores land at
    their pool positions, the short list keeps the best-scored embeddings."""
    from kdflow.active.outputs import PoolPass, Reducer, committee
    from kdflow.errors import KdflowError
    a, b, t = (np.full((2, 3), x) for x in (0.1, 0.2, 0.7))
    assert committee("vote_entropy", np.stack([a, b]), None, None).shape == (2, 2, 3)
    assert committee("vote_entropy", np.stack([a]), a, t).shape == (3, 2, 3)  # member, student, teacher
    with pytest.raises(KdflowError, match="committee of at least 2"):
        committee("vote_entropy", np.stack([a]), None, None)
    red = Reducer(6, PoolPass("entropy", 2, keep_top=2, need_embeddings=True))
    sure, unsure = np.array([[0.99, 0.01]]), np.array([[0.5, 0.5]])
    for pos, p in ((0, sure), (3, unsure), (5, np.array([[0.8, 0.2]]))):
        red.add(np.array([pos]), PoolOutputs(n=1, probs=p), np.array([[float(pos), 1.0]]))
    out = red.result()
    assert np.isneginf(out.scores[[1, 2, 4]]).all() and out.scores[3] > out.scores[5] > out.scores[0]
    assert out.embedding_rows.tolist() == [3, 5] and out.embeddings[:, 0].tolist() == [3.0, 5.0]
