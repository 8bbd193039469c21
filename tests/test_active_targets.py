"""What active learning spends and on what: the cold start (typicality picks cluster centres, balanced
spreads over the teacher's classes, the loop hands over to the strategy at ``cold_start_labels``), and the
targets: ``teacher_calls`` (the teacher's calls are the budget) and ``teacher`` (labels fine-tune the
teacher, warm-started round after round, which distils the student on the whole pool)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import kdflow
from kdflow.active.coldstart import balanced, typical_member, typicality
from kdflow.errors import KdflowError

from conftest import tiny_config
from margins import at_least


def blobs(sizes, seed=0, spread=0.3):
    """Gaussian blobs around (10 i, 0) of the given sizes, each with its exact centre as the last point."""
    rng = np.random.default_rng(seed)
    points, centres = [], []
    for i, n in enumerate(sizes):
        centre = np.array([10.0 * i, 0.0])
        points.append(centre + rng.normal(0, spread, (n - 1, 2)))
        points.append(centre[None])
        centres.append(sum(sizes[:i + 1]) - 1)
    return np.concatenate(points), centres


def test_the_most_typical_member_is_the_densest_point():
    pts, centres = blobs([50])
    assert typical_member(pts) == centres[0]
    assert typical_member(pts[:2]) == 0 and typical_member(pts[:1]) == 0


def test_the_neighbour_vote_estimates_labels_from_similar_labelled_rows():
    from kdflow.active.strategies import neighbour_vote
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.normal([5, 0], 0.3, (20, 2)), rng.normal([0, 5], 0.3, (20, 2))])
    labels = np.repeat([2, 0], 20)  # class 1 never seen
    queries = np.array([[4.0, 0.5], [0.5, 4.0], [3.0, 3.0]])
    p = neighbour_vote(queries, ref, labels, 3, k=10)
    assert np.allclose(p.sum(1), 1.0) and (p > 0).all()  # the prior: no class is ruled out
    assert p[0].argmax() == 2 and p[1].argmax() == 0 and p[0, 2] > 0.9 and p[1, 0] > 0.9
    assert abs(p[2, 0] - p[2, 2]) < 0.5 and p[2, 1] < 0.1  # between the two: split, and the unseen class small
    empty = neighbour_vote(queries, np.zeros((0, 2)), np.zeros(0, np.int64), 3)
    assert np.allclose(empty, 1 / 3)  # nothing bought yet: the prior alone
    assert np.allclose(neighbour_vote(queries, ref, labels, 3, k=1000), neighbour_vote(queries, ref, labels, 3, k=40))


def test_the_most_typical_member_is_the_same_computed_in_blocks():
    pts = np.random.default_rng(3).normal(size=(300, 5))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    brute = int(np.argmin(np.sort(d, axis=1)[:, :20].mean(1)))
    assert typical_member(pts) == typical_member(pts, block=7) == typical_member(pts, block=300) == brute


def test_typicality_picks_the_centres_of_the_largest_uncovered_clusters():
    emb, centres = blobs([30, 60, 40])
    blob = np.repeat([0, 1, 2], [30, 60, 40])
    everything = np.arange(len(emb))

    def central(i: int) -> bool:  # among the 15 % of its blob nearest the blob's centre
        members = np.flatnonzero(blob == blob[i])
        dist = np.linalg.norm(emb[members] - emb[centres[blob[i]]], axis=1)
        return np.linalg.norm(emb[i] - emb[centres[blob[i]]]) <= np.quantile(dist, 0.15)

    picked = typicality(emb, 3, everything, np.zeros(0, np.int64), seed=0)  # 3 clusters: the 3 blobs
    assert blob[picked].tolist() == [1, 2, 0] and all(map(central, picked))  # the largest cluster first
    labelled = np.array([centres[1]])  # the largest blob holds a label: 1 + 2 clusters, that one covered
    picked = typicality(emb, 2, np.setdiff1d(everything, labelled), labelled, seed=0)
    assert blob[picked].tolist() == [2, 0] and all(map(central, picked))
    assert not central(int(np.argmax(np.linalg.norm(emb - emb[centres[0]], axis=1) * (blob == 0))))  # can fail
    assert typicality(emb, 0, everything, np.zeros(0, np.int64)).tolist() == []


def test_balanced_spreads_the_picks_over_the_predicted_classes():
    predicted = np.array([0] * 10 + [1] * 3 + [2] * 5)
    picked = balanced(predicted, 6, np.arange(18), seed=1)
    assert np.bincount(predicted[picked], minlength=3).tolist() == [2, 2, 2]
    picked = balanced(predicted, 12, np.arange(18), seed=1)  # class 1 runs out: the others take its turns
    assert np.bincount(predicted[picked], minlength=3).tolist() == [5, 3, 4] and len(set(picked)) == 12
    assert balanced(predicted, 6, np.arange(18), seed=1).tolist() == balanced(predicted, 6, np.arange(18),
                                                                                seed=1).tolist()


@pytest.fixture(scope="module")
def taught(tmp_path_factory, tiny_bert, intents_json):
    out = tmp_path_factory.mktemp("cold")
    raw = tiny_config(tiny_bert, intents_json, out, "teach")
    kdflow.teach(raw)
    raw["model"]["teacher"]["name"] = str(out / "teach" / "teacher")
    raw["train"]["lr"] = 2e-2
    raw["tiny_bert"] = tiny_bert
    return out, raw


def run(taught, name, fresh_teacher=False, **active):
    """An active run on the taught teacher, or (``fresh_teacher``) on a teacher whose head the rounds train."""
    out, raw = taught
    cfg = {**raw, "run": {**raw["run"], "name": name}, "distill": {"cache_dir": str(out / f"c-{name}"), "alpha": 0.5},
           "teach": {**raw["teach"], "epochs": 3}}
    if fresh_teacher:  # the taught teacher learnt every pool label: target teacher starts from a bare head
        cfg["model"] = {**raw["model"], "teacher": {"name": raw["tiny_bert"]}}
    cfg["active"] = {"initial": 8, "per_round": 8, "rounds": 3, "min_steps": 20, "strategy": "margin", **active}
    cfg.pop("tiny_bert", None)
    return cfg


def test_the_loop_seeds_by_typicality_until_cold_start_labels_then_uses_its_strategy(taught):
    out = kdflow.active(run(taught, "typ", initial_strategy="typicality", cold_start_labels=16))
    strategies = [b["strategy"] for b in out["batches"]]
    assert strategies == ["initial (typicality)", "typicality (cold start)", "margin"]
    assert out["labels"] == 24 and len(out["rounds"]) == 3
    state = json.loads((taught[0] / "typ" / "active" / "state.json").read_text())
    pool = out["pool"]
    assert out["teacher_queries"] == pool  # the teacher saw the pool once, for its view (gold labels: none)
    assert len({i for b in state["batches"] for i in b}) == 24
    again = kdflow.active(run(taught, "typ-again", initial_strategy="typicality", cold_start_labels=16))
    assert again["batches"][0]["k"] == 8 and [r["validation"] for r in again["rounds"]] == \
        [r["validation"] for r in out["rounds"]]  # deterministic


def test_balanced_seeding_needs_no_gold_labels_and_a_cold_start_without_one_is_refused(taught):
    out = kdflow.active(run(taught, "bal", initial_strategy="balanced", rounds=1, oracle="teacher"))
    assert out["batches"][0]["strategy"] == "initial (balanced)" and out["labels"] == 8
    with pytest.raises(KdflowError, match="cold_start_labels keeps choosing batches by the cold-start strategy"):
        kdflow.active(run(taught, "bad", initial_strategy="random", cold_start_labels=16))
    with pytest.raises(KdflowError, match="set active.initial_strategy: balanced"):
        kdflow.active(run(taught, "human", initial_strategy="stratified", oracle="human"))


def test_target_teacher_calls_counts_every_call_and_asks_the_teacher_nothing_else(taught):
    out = kdflow.active(run(taught, "calls", target="teacher_calls", initial_strategy="typicality",
                            cold_start_labels=16, budget=24))
    assert out["target"] == "teacher_calls" and out["oracle"] == "teacher"  # the oracle follows the target
    assert out["sources"] == {"teacher": 24} and out["labels"] == 24
    # the budget is teacher calls: the cold start read the untrained student's view, not the teacher's
    assert [r["teacher_queries"] for r in out["rounds"]] == [r["labels"] for r in out["rounds"]] == [8, 16, 24]
    with pytest.raises(KdflowError, match="target teacher_calls spends teacher calls, so the teacher is the oracle"):
        kdflow.active(run(taught, "calls-human", target="teacher_calls", oracle="human"))
    # gold is the default that a run's config.yaml lists: replaced by the teacher, not refused
    assert kdflow.load_config(run(taught, "g", target="teacher_calls", oracle="gold")).active.oracle == "teacher"
    # disagreement estimates the teacher from the labels it already gave: still one call per label
    out = kdflow.active(run(taught, "calls-dis", target="teacher_calls", strategy="disagreement",
                            initial_strategy="random", budget=24))
    assert [r["teacher_queries"] for r in out["rounds"]] == [r["labels"] for r in out["rounds"]] == [8, 16, 24]
    assert [b["strategy"] for b in out["batches"]][1:] == ["disagreement", "disagreement"]
    with pytest.raises(KdflowError, match="stop_parity asks the teacher"):
        kdflow.active(run(taught, "calls-par", target="teacher_calls", stop_parity=0.05))
    with pytest.raises(KdflowError, match="balanced sorts the pool by the teacher's predictions"):
        kdflow.active(run(taught, "calls-bal", target="teacher_calls", initial_strategy="balanced"))


def test_target_teacher_fine_tunes_the_teacher_each_round_and_distils_the_student_on_the_pool(taught):
    out = kdflow.active(run(taught, "tt", True, target="teacher", initial_strategy="random"))
    assert out["target"] == "teacher" and [r["labels"] for r in out["rounds"]] == [8, 16, 24]
    assert out["sources"] == {"gold": 24}  # human (here gold) labels only; the teacher labels nothing
    assert all("validation" in r["teacher"] and "test" in r["teacher"] for r in out["rounds"])
    # its soft targets cover the pool (free, but counted), never the pool texts also in validation or test
    assert out["ignored"] > 0 and out["teacher_queries"] == out["pool"] - out["ignored"]
    folder = taught[0] / "tt" / "active"
    assert [p.name for p in folder.glob("teacher-round-*.safetensors")] == ["teacher-round-002.safetensors"]
    epochs = (folder / "teacher_epochs.csv").read_text().splitlines()
    assert sum(line.startswith("teacher-round2,") for line in epochs) == out["rounds"][-1]["teacher"]["epochs_run"]
    assert "teacher_validation_accuracy" in (folder / "rounds.csv").read_text().splitlines()[0]
    assert (folder / "teacher" / "model.safetensors").is_file() and (folder / "student" / "model.safetensors").is_file()
    # 8-24 labels are 1-2 batches: repeated within each epoch so that teach.epochs (3) epochs make min_steps
    # (20), with one validation pass per epoch instead of 20 epochs of one step each
    assert [r["teacher"]["epochs_run"] for r in out["rounds"]] == [3, 3, 3]
    pool_left = out["pool"] - 24
    assert pool_left > 0
    at_least("active targets: round-2 teacher validation accuracy", out["rounds"][-1]["teacher"]["validation"][
        "accuracy"], 0.3)  # it learnt: chance 0.25


@pytest.mark.parametrize("phase", ["train", "select"])
def test_target_teacher_resumes_from_the_saved_teacher_exactly(taught, monkeypatch, phase):
    from kdflow.active import loop as loop_mod
    from kdflow.active import rounds as rounds_mod  # where both targets fit
    cfg = dict(target="teacher", initial_strategy="typicality", cold_start_labels=16)
    whole = kdflow.active(run(taught, f"tw-{phase}", True, **cfg))
    mod, name = (rounds_mod, "fit") if phase == "train" else (loop_mod, "stream_pool")
    real, calls = getattr(mod, name), {"n": 0}

    def dies(*args, **kwargs):  # train: teacher r0, student r0, teacher r1, student r1 <- killed;
        calls["n"] += 1         # select: the first pool pass after the cold start (batch 2) <- killed
        if calls["n"] == (4 if phase == "train" else 1):
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, name, dies)
    with pytest.raises(KeyboardInterrupt):
        kdflow.active(run(taught, f"tk-{phase}", True, **cfg))
    monkeypatch.setattr(mod, name, real)
    resumed = kdflow.active(run(taught, f"tk-{phase}", True, **cfg), resume=True)
    assert [b["strategy"] for b in resumed["batches"]] == ["initial (typicality)", "typicality (cold start)", "margin"]
    assert [r["validation"] for r in resumed["rounds"]] == [r["validation"] for r in whole["rounds"]]
    assert [r["teacher"]["validation"] for r in resumed["rounds"]] == [r["teacher"]["validation"]
                                                                        for r in whole["rounds"]]
    for part in ("teacher-round-002.safetensors", "student/model.safetensors", "teacher/model.safetensors"):
        a, b = (load_file(Path(taught[0]) / n / "active" / part) for n in (f"tw-{phase}", f"tk-{phase}"))
        assert all(torch.equal(a[k], b[k]) for k in a), part
    state = [json.loads((Path(taught[0]) / n / "active" / "state.json").read_text()) for n in ("tw-" + phase,
                                                                                              "tk-" + phase)]
    assert state[0]["batches"] == state[1]["batches"]


def test_target_teacher_refuses_what_would_need_the_student_or_label_with_the_teacher(taught):
    with pytest.raises(KdflowError, match="fine-tunes the teacher on the labels, so they cannot come from it"):
        kdflow.active(run(taught, "t1", target="teacher", oracle="teacher", initial_strategy="random"))
    with pytest.raises(KdflowError, match="balanced sorts the pool by the teacher's predictions, and this teacher's"):
        kdflow.active(run(taught, "t4", True, target="teacher", initial_strategy="balanced"))
    with pytest.raises(KdflowError, match="strategy disagreement needs the student beside it"):
        kdflow.active(run(taught, "t2", target="teacher", strategy="disagreement"))
    cfg = run(taught, "t3", target="teacher")
    cfg["distill"]["alpha"] = 0.0
    with pytest.raises(KdflowError, match="set distill.alpha above 0"):
        kdflow.active(cfg)


def test_bald_under_target_teacher_samples_the_teachers_dropout_not_the_students(taught):
    cfg = run(taught, "bald-t", True, target="teacher", strategy="bald", initial_strategy="random", rounds=2)
    cfg["model"] = {**cfg["model"], "student": {**cfg["model"]["student"], "dropout": 0.0}}
    out = kdflow.active(cfg)  # the tiny BERT teacher has dropout: accepted, though the student has none
    assert [r["labels"] for r in out["rounds"]] == [8, 16] and out["batches"][-1]["strategy"] == "bald"
    cfg = run(taught, "bald-s", strategy="bald")
    cfg["model"] = {**cfg["model"], "student": {**cfg["model"]["student"], "dropout": 0.0}}
    with pytest.raises(KdflowError, match="bald samples the student with MC dropout"):
        kdflow.active(cfg)


@pytest.mark.parametrize("active,expected", [
    ({}, "stratified"),  # the pool's gold labels are known
    ({"oracle": "hybrid", "hybrid_human": "gold"}, "stratified"),
    ({"oracle": "human"}, "balanced"),  # alpha 0.5 asks the teacher anyway: its predictions balance the seed set
    ({"oracle": "teacher"}, "balanced"),
    ({"oracle": "human", "cold_start_labels": 16}, "balanced"),
    ({"cold_start_labels": 16}, "balanced"),  # gold labels, but a cold start is asked for
    ({"oracle": "teacher", "target": "teacher_calls"}, "typicality"),  # balanced would call the teacher on the pool
    ({"oracle": "human", "target": "teacher"}, "typicality"),  # its head may not be trained yet
    ({"oracle": "human", "strategy": "entropy", "_alpha": 0.0}, "random"),  # the run asks the teacher nothing
    ({"oracle": "human", "initial_strategy": "random"}, "random"),  # given: kept
])
def test_an_unset_initial_strategy_resolves_to_what_works_with_the_other_keys(taught, active, expected):
    from kdflow.active import settings
    cfg = run(taught, "resolve", **{k: v for k, v in active.items() if not k.startswith("_")})
    cfg["distill"]["alpha"] = active.get("_alpha", 0.5)
    resolved, line = settings.resolve(kdflow.load_config(cfg))
    assert resolved.active.initial_strategy == expected
    assert (line is None) == ("initial_strategy" in active)
    if line:
        assert line.startswith(f"[active] initial_strategy {expected} (auto: ")
    settings.check(resolved)  # and it works with them: nothing refused


def test_a_human_oracle_with_the_defaults_starts_and_says_how_it_chose(taught):
    out = kdflow.active(run(taught, "human-default", oracle="human", rounds=2))
    assert out["status"] == "waiting" and len(out["pending"]["ids"]) == 8
    folder = taught[0] / "human-default"
    log = (folder / "log.txt").read_text()
    assert "[active] initial_strategy balanced (auto: oracle human has no gold labels; the teacher's predictions " \
           "balance the classes)" in log
    assert "initial_strategy: balanced" in (folder / "config.yaml").read_text()
    state = json.loads((folder / "active" / "state.json").read_text())
    assert state["batch_meta"][0]["strategy"] == "initial (balanced)"
