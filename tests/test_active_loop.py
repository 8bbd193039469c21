"""The active-learning loop on a tiny random BERT: bookkeeping, oracles, the human round trip,
resume after a kill, stopping rules, streaming, the strategy comparison, real data."""

import csv
import json
from copy import deepcopy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import kdflow
from kdflow import KdflowError
from kdflow.active import loop as loop_mod
from kdflow.active import rounds as rounds_mod
from kdflow.active.context import Context
from kdflow.active.curves import labels_to_reach
from kdflow.cli import main

from conftest import make_intents, tiny_config
from margins import at_least


@pytest.fixture(scope="module")
def taught(tmp_path_factory, tiny_bert, intents_json):
    out = tmp_path_factory.mktemp("active")
    raw = tiny_config(tiny_bert, intents_json, out, "teach")
    kdflow.teach(raw)
    return out, raw, intents_json


def al_cfg(taught, name, alpha=0.5, **active):
    out, raw, _ = taught
    cfg = deepcopy(raw)
    cfg["run"]["name"] = name
    cfg["model"]["teacher"]["name"] = str(out / "teach" / "teacher")
    cfg["distill"] = {"cache_dir": str(out / f"cache-{name}"), "alpha": alpha}
    cfg["train"]["lr"] = 2e-2
    cfg["active"] = {"initial": 8, "per_round": 8, "rounds": 3, "min_steps": 60, **active}
    return cfg


def state_of(taught, name) -> dict:
    return json.loads((taught[0] / name / "active" / "state.json").read_text())


def leaked_train_texts(intents_json) -> list:
    """Train rows whose text also occurs in validation or test (a repeated text counts each time)."""
    blob = json.loads(open(intents_json).read())
    held = {t for t, _ in blob["val"] + blob["test"]}
    return [t for t, _ in blob["train"] if t in held]


@pytest.fixture(scope="module")
def gold_run(taught):
    """One finished gold-oracle run (entropy, growth 1.5), shared by the tests that need one."""
    cfg = al_cfg(taught, "gold", strategy="entropy", growth=1.5)
    return cfg, kdflow.active(cfg)


def test_gold_loop_bookkeeping_cache_and_outputs(taught, gold_run):
    cfg, out = gold_run
    assert out["status"] == "done" and out["stopped"] == "3 rounds done"
    assert [r["labels"] for r in out["rounds"]] == [8, 16, 28]  # 8, then 8 * 1.5**0, then 8 * 1.5**1
    assert [r["new"] for r in out["rounds"]] == [8, 8, 12]
    state = state_of(taught, "gold")
    ids = [k for b in state["batches"] for k in b]
    assert len(ids) == len(set(ids)) == 28
    assert set(ids) == set(state["labels"]) and not set(ids) & set(state["ignored"])
    assert {v["source"] for v in state["labels"].values()} == {"gold"}
    # pool texts that also sit in validation or test are ignored, never queried
    from kdflow.config import load_config
    from kdflow.data import load_data
    pool = load_data(load_config(cfg).data).train
    leaks = set(leaked_train_texts(taught[2]))
    assert leaks and {pool.ids[i] for i, t in enumerate(pool.inputs["text"]) if t in leaks} == set(state["ignored"])
    # gold labels are the pool's own
    names = ["balance", "flight", "music", "weather"]
    for i, key in enumerate(pool.ids):
        if key in state["labels"]:
            assert state["labels"][key]["label"] == names[pool.targets[i]]
    # KD targets: the teacher was asked about the labelled examples only, each once; the cache grew a part
    # per round (new examples only) and never recomputed one
    assert out["teacher_queries"] == 28
    parts = sorted((taught[0] / "cache-gold").rglob("part-*.pt"))
    assert len(parts) == 3
    cached = [k for p in parts for k in torch.load(p, weights_only=True)["ids"]]
    assert len(cached) == len(set(cached)) == 28 and set(cached) == set(ids)
    # run folder: per-round rows, per-epoch rows, final student, report with the curve
    run = taught[0] / "gold"
    rows = list(csv.DictReader(open(run / "active" / "rounds.csv")))
    assert [int(r["labels"]) for r in rows] == [8, 16, 28] and "test_accuracy" in rows[0]
    # 2 of the 48 test texts are also train texts: each round's test score has its clean part's beside it
    assert out["overlap"]["test"]["overlapping"] == 2 and out["overlap"]["test"]["clean_examples"] == 46
    assert all(set(r["test_clean"]) == set(r["test"]) for r in out["rounds"]) and "test_clean_accuracy" in rows[0]
    again = kdflow.evaluate(str(run / "active" / "student"), config=cfg)  # the same clean part, scored afresh
    assert again["overlap"]["clean_examples"] == 46
    assert again["clean"]["accuracy"] == pytest.approx(out["rounds"][-1]["test_clean"]["accuracy"])
    epochs = list(csv.DictReader(open(run / "active" / "epochs.csv")))
    assert {r["role"] for r in epochs} == {"round0", "round1", "round2"}
    assert (run / "active" / "student" / "model.safetensors").is_file()
    assert json.loads((run / "metrics.json").read_text())["active"]["labels"] == 28
    report = (run / "report.md").read_text()
    assert "## Active learning" in report and "plots/active.png" in report and (run / "plots" / "active.png").is_file()
    # the saved final student is the last round's model: same test accuracy when evaluated afresh
    again = kdflow.evaluate(str(run / "active" / "student"), config=cfg)
    assert again["accuracy"] == pytest.approx(out["rounds"][-1]["test"]["accuracy"])


def test_teacher_oracle_labels_with_the_teachers_predictions(taught):
    cfg = al_cfg(taught, "byteacher", strategy="margin", oracle="teacher", initial_strategy="random", rounds=2)
    out = kdflow.active(cfg)
    assert out["sources"] == {"teacher": 16} and out["teacher_queries"] == 16
    from kdflow.models import load_saved
    teacher, tok, names, _ = load_saved(taught[0] / "teach" / "teacher")
    state = state_of(taught, "byteacher")
    from kdflow.config import load_config
    from kdflow.data import load_data
    pool = load_data(load_config(cfg).data).train
    texts = {k: pool.inputs["text"][i] for i, k in enumerate(pool.ids)}
    keys = list(state["labels"])
    with torch.no_grad():
        enc = tok([texts[k] for k in keys], padding=True, truncation=True, max_length=32, return_tensors="pt")
        pred = teacher.eval()(**enc).logits.argmax(-1).tolist()
    assert [state["labels"][k]["label"] for k in keys] == [names[p] for p in pred]


def test_hybrid_gives_the_teacher_only_what_it_is_sure_of(taught):
    from kdflow.models import load_saved
    teacher, tok, _, _ = load_saved(taught[0] / "teach" / "teacher")
    train = [t for t, _ in json.loads(open(taught[2]).read())["train"]]
    with torch.no_grad():
        enc = tok(train, padding=True, truncation=True, max_length=32, return_tensors="pt")
        conf = torch.softmax(teacher.eval()(**enc).logits, -1).max(-1).values.numpy()
    threshold = float(np.median(conf))  # about half the pool is "sure"
    cfg = al_cfg(taught, "hybrid", alpha=0.0, strategy="least_confidence", oracle="hybrid", hybrid_human="gold",
                 hybrid_threshold=threshold, rounds=2, per_round=16)
    out = kdflow.active(cfg)
    assert out["sources"].get("teacher", 0) > 0 and out["sources"].get("gold", 0) > 0
    # no soft targets (alpha 0): the teacher saw exactly the selected examples, to decide who labels them
    assert out["teacher_queries"] == out["labels"] == 24
    state = state_of(taught, "hybrid")
    by_text = dict(zip(train, conf))
    from kdflow.config import load_config
    from kdflow.data import load_data
    pool = load_data(load_config(cfg).data).train
    for i, key in enumerate(pool.ids):
        if key in state["labels"]:
            sure = by_text[pool.inputs["text"][i]] >= threshold - 1e-6
            assert (state["labels"][key]["source"] == "teacher") == sure or abs(by_text[pool.inputs["text"][i]]
                                                                                 - threshold) < 1e-4


@pytest.mark.parametrize("strategy,kill", [("margin", "train"), ("vote_entropy", "select")])
def test_resume_after_a_killed_round_replays_exactly(taught, monkeypatch, strategy, kill):
    base = dict(strategy=strategy, rounds=3, committee_size=2)
    whole = kdflow.active(al_cfg(taught, f"whole-{strategy}", **base))
    cfg = al_cfg(taught, f"killed-{strategy}", **base)
    cfg["distill"]["cache_dir"] = str(taught[0] / f"cache-whole-{strategy}")  # shared: same teacher, same logits
    calls = {"n": 0}
    where = rounds_mod if kill == "train" else loop_mod  # the round's fit, the pool's scoring pass
    real = rounds_mod.fit if kill == "train" else loop_mod.stream_pool

    def dies_on_the_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == (3 if kill == "train" else 2):
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(where, "fit" if kill == "train" else "stream_pool", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        kdflow.active(cfg)
    half = state_of(taught, f"killed-{strategy}")
    assert len(half["rounds"]) == 2 and half["stopped"] is None
    monkeypatch.setattr(where, "fit" if kill == "train" else "stream_pool", real)
    with pytest.raises(KdflowError, match="--resume"):
        kdflow.active(cfg)  # never overwrites finished work silently
    done = kdflow.active(cfg, resume=True)
    assert done["status"] == "done"
    assert state_of(taught, f"killed-{strategy}")["batches"] == state_of(taught, f"whole-{strategy}")["batches"]
    for a, b in zip(done["rounds"], whole["rounds"]):
        assert a["validation"] == pytest.approx(b["validation"]) and a["test"] == pytest.approx(b["test"])


def write_yaml(tmp_path, cfg) -> str:
    path = tmp_path / "active.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_human_round_trip_with_malformed_label_files(taught, gold_run, tmp_path, capsys):
    cfg = al_cfg(taught, "human", strategy="entropy", oracle="human", initial_strategy="random", rounds=2,
                 initial=6, per_round=5)
    path = write_yaml(tmp_path, cfg)
    assert main(["active", path, "--quiet"]) == 0
    state = state_of(taught, "human")
    files = state["pending"]["files"]
    for key in ("csv", "jsonl", "label_studio", "label_studio_config"):
        assert (taught[0] / "human" / "active" / "batch-000").joinpath(files[key].split("/")[-1]).is_file()
    rows = list(csv.DictReader(open(files["csv"])))
    assert len(rows) == 6 and all(r["label"] == "" for r in rows) and "weather" in open(files["label_studio_config"]).read()
    gold = dict((t, y) for t, y in json.loads(open(taught[2]).read())["train"])

    def write(name, rows):
        out = tmp_path / name
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return str(out)

    labelled = [{**r, "label": gold[r["text"]]} for r in rows]
    cases = [
        ([{**r, "label": "wether"} if i == 2 else r for i, r in enumerate(labelled)], "Line 4 .* label 'wether'"),
        ([{**r, "label": ""} if i == 0 else r for i, r in enumerate(labelled)], "Line 2 .* has no label"),
        (labelled[:-1], "1 of the 6 examples asked for have no row"),
        ([{**r, "id": "train:nope"} if i == 1 else r for i, r in enumerate(labelled)], "Line 3 .*did not ask for"),
        (labelled + [labelled[0]], "Line 8 .* repeats id"),
    ]
    import re
    for bad, message in cases:
        capsys.readouterr()
        assert main(["active", path, "--quiet", "--resume", "--labels", write("bad.csv", bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
        assert "Traceback" not in err
        assert state_of(taught, "human")["pending"] == state["pending"]  # nothing kept from a bad file
        assert state_of(taught, "human")["labels"] == {}
    # a Label Studio export of the same batch (one example skipped) goes through
    tasks = json.loads(open(files["label_studio"]).read())
    export = [{"id": i, "data": t["data"], "annotations": [{"was_cancelled": False, "result": [
        {"type": "choices", "from_name": "label", "to_name": "text",
         "value": {"choices": ["__skip__" if i == 0 else gold[t["data"]["text"]]]}}]}]} for i, t in enumerate(tasks)]
    ls = tmp_path / "export.json"
    ls.write_text(json.dumps(export))
    assert main(["active", path, "--quiet", "--resume", "--labels", str(ls)]) == 0
    state = state_of(taught, "human")
    assert len(state["labels"]) == 5 and len(state["rounds"]) == 1
    assert {v["source"] for v in state["labels"].values()} == {"human"}
    skipped = tasks[0]["data"]["kdflow_id"]
    assert state["ignored"][skipped] == "skipped by the labeller"
    assert state["pending"]["batch"] == 1 and len(state["pending"]["ids"]) == 5
    assert skipped not in state["pending"]["ids"]
    # a resume without the labels just says what it waits for
    assert main(["active", path, "--quiet", "--resume"]) == 0
    # labels for a run that waits for none
    done_cfg = write_yaml(tmp_path, al_cfg(taught, "gold", strategy="entropy", growth=1.5))
    capsys.readouterr()
    assert main(["active", done_cfg, "--quiet", "--labels", str(ls)]) == 2
    assert "No batch is waiting for labels" in capsys.readouterr().err


def test_stopping_rules(taught):
    out = kdflow.active(al_cfg(taught, "budget", strategy="random", budget=20, rounds=None))
    assert [r["labels"] for r in out["rounds"]] == [8, 16, 20] and out["stopped"] == "budget of 20 labels reached"
    # a raised budget continues the stopped run where it left off
    more = kdflow.active(al_cfg(taught, "budget", strategy="random", budget=28, rounds=None), resume=True)
    assert [r["labels"] for r in more["rounds"]] == [8, 16, 20, 28]
    parity = kdflow.active(al_cfg(taught, "parity", strategy="random", stop_parity=0.99))
    assert len(parity["rounds"]) == 1 and parity["stopped"].startswith("teacher parity")
    at_least("active: teacher validation accuracy (stop_parity)", parity["teacher_validation"]["accuracy"], 0.35)
    again = kdflow.active(al_cfg(taught, "parity", strategy="random", stop_parity=0.99), resume=True)
    assert len(again["rounds"]) == 1 and again["labels"] == 8  # stays stopped: no batch bought on resume
    # stabilising predictions: the rule reads the last stop_window kappas
    fake = SimpleNamespace(ac=SimpleNamespace(budget=None, rounds=None, stop_parity=None, stop_kappa=0.9, stop_window=2),
                           cfg=SimpleNamespace(train=SimpleNamespace(metric="accuracy")), teacher_val=None,
                           state=SimpleNamespace(labels={}, candidates=[1],
                                                 rounds=[{"kappa": None, "validation": {"accuracy": 0.5}},
                                                         {"kappa": 0.95, "validation": {"accuracy": 0.5}},
                                                         {"kappa": 0.85, "validation": {"accuracy": 0.5}}]))
    assert loop_mod.stop_reason(fake) is None
    fake.state.rounds.append({"kappa": 0.93, "validation": {"accuracy": 0.5}})
    assert loop_mod.stop_reason(fake) is None
    fake.state.rounds.append({"kappa": 0.97, "validation": {"accuracy": 0.5}})
    assert loop_mod.stop_reason(fake).startswith("predictions stable")


def test_bad_settings_are_named_before_any_work(taught, gold_run, tmp_path):
    cases = [
        (dict(oracle="teacher", initial_strategy="stratified"), "initial_strategy stratified"),
        (dict(strategy="bald"), "dropout"),
        (dict(strategy="vote_entropy", committee_size=9), "committee_size 9 exceeds"),
        (dict(strategy="vote_entropy", committee_size=3), "exceeds train.patience"),
    ]
    for active, message in cases:
        cfg = al_cfg(taught, "bad", **active)
        if active.get("strategy") == "bald":
            cfg["model"]["student"]["dropout"] = 0.0
        if active.get("committee_size") == 3:
            cfg["train"]["patience"] = 1
        with pytest.raises(KdflowError, match=message):
            kdflow.active(cfg)
    assert not (taught[0] / "bad").exists()  # nothing written
    for distill, message in (({"mode": "online"}, "distill.mode online would be ignored"),
                             ({"intermediate": True}, "distill.intermediate would be ignored")):
        cfg = al_cfg(taught, "bad")
        cfg["distill"].update(distill)
        with pytest.raises(KdflowError, match=message):
            kdflow.active(cfg)
    unl = tmp_path / "pool.csv"
    unl.write_text("text\nbook me a flight to lima\n")
    cfg = al_cfg(taught, "bad", oracle="gold")
    cfg["data"]["unlabelled"] = str(unl)
    with pytest.raises(KdflowError, match="no gold labels"):
        kdflow.active(cfg)
    with pytest.raises(KdflowError, match="no active-learning run to resume"):
        kdflow.active(al_cfg(taught, "never-started"), resume=True)
    with pytest.raises(KdflowError, match="active setting strategy was 'entropy'"):
        kdflow.active(al_cfg(taught, "gold", strategy="margin", growth=1.5), resume=True)
    with pytest.raises(KdflowError, match="Unknown config key 'active.stratgy': did you mean 'active.strategy'"):
        kdflow.active(al_cfg(taught, "x"), ["active.stratgy=margin"])
    no_teacher = al_cfg(taught, "noteacher", oracle="teacher", initial_strategy="random")
    no_teacher["model"]["teacher"]["name"] = taught[1]["model"]["teacher"]["name"]  # random head, never taught
    with pytest.raises(KdflowError, match="needs a trained teacher"):
        kdflow.active(no_teacher)


def test_unlabelled_pool_with_train_as_the_seed_set(taught, tmp_path):
    rows = make_intents(15, seed=7)
    unl = tmp_path / "unlabelled.csv"
    with open(unl, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerows([[t] for t, _ in rows])
    cfg = al_cfg(taught, "unl", strategy="disagreement", oracle="teacher", initial_strategy="random", rounds=2)
    cfg["data"]["unlabelled"] = str(unl)
    out = kdflow.active(cfg)
    state = state_of(taught, "unl")
    n_train = 160  # the labelled train split (40 per intent) is the seed set, whole
    assert len(state["batches"][0]) == n_train
    assert {state["labels"][k]["source"] for k in state["batches"][0]} == {"given"}
    assert all(k.startswith("unlabelled:") for k in state["batches"][1]) and len(state["batches"][1]) == 8
    assert out["sources"] == {"given": n_train, "teacher": 8}


def test_streamed_scores_do_not_depend_on_chunking(taught):
    from kdflow.active.outputs import PoolPass, stream_pool
    from kdflow.config import load_config
    from kdflow.data import TextFeaturizer, load_data
    from kdflow.models import load_saved
    model, tok, _, _ = load_saved(taught[0] / "teach" / "teacher")
    pool = load_data(load_config(al_cfg(taught, "x")).data).train
    pos = np.arange(0, len(pool), 2)
    feat = lambda: TextFeaturizer(tok, 32)  # noqa: E731
    whole = stream_pool(model, pool, pos, feat, "cpu", PoolPass("entropy", 4, batch_size=64, chunk=4096,
                                                                need_embeddings=True, keep_top=10))
    parts = stream_pool(model, pool, pos, feat, "cpu", PoolPass("entropy", 4, batch_size=3, chunk=7,
                                                                need_embeddings=True, keep_top=10))
    np.testing.assert_allclose(whole.scores[pos], parts.scores[pos], atol=1e-5)
    assert np.isneginf(np.delete(whole.scores, pos)).all()  # positions not asked about score nothing
    top = pos[np.lexsort((pos, -whole.scores[pos]))[:10]]
    np.testing.assert_array_equal(np.sort(top), parts.embedding_rows)  # the short list holds the 10 best only
    assert parts.embeddings.shape == (10, 32)
    # MC dropout: the same seed (and batching) draws the same masks, whatever ran before; another seed others
    bald1 = stream_pool(model, pool, pos, feat, "cpu", PoolPass("bald", 4, mc_samples=4, seed=5))
    torch.rand(100)
    bald2 = stream_pool(model, pool, pos, feat, "cpu", PoolPass("bald", 4, mc_samples=4, seed=5))
    bald3 = stream_pool(model, pool, pos, feat, "cpu", PoolPass("bald", 4, mc_samples=4, seed=6))
    np.testing.assert_array_equal(bald1.scores[pos], bald2.scores[pos])
    assert not np.allclose(bald1.scores[pos], bald3.scores[pos])
    assert (bald1.scores[pos] > 0).all() and not model.training  # dropout switched off again afterwards


def test_ci95_is_the_t_interval_of_the_mean():
    from kdflow.active.curves import ci95
    # n = 5, sample std 1.5811 (ddof 1), t(0.975, 4) = 2.7764: 2.7764 * 1.5811 / sqrt(5) = 1.9632
    assert ci95([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(1.9632, abs=1e-4)
    assert ci95([0.5, 0.5]) == 0.0
    assert ci95([0.7]) is None and ci95([0.7, None, 0.8]) is None  # one seed, or one that never got there


def test_labels_to_reach_interpolates():
    assert labels_to_reach([100, 200, 400], [0.5, 0.7, 0.9], 0.8) == pytest.approx(300)
    assert labels_to_reach([100, 200], [0.85, 0.9], 0.8) == 100
    assert labels_to_reach([100, 200], [0.5, 0.6], 0.8) is None


def test_compare_strategies_writes_curves_and_the_all_labels_reference(taught):
    cfg = al_cfg(taught, "cmp", rounds=2)
    from kdflow.active import compare_strategies
    result = compare_strategies(cfg, ["random", "entropy"], seeds=2)
    blob = json.loads((taught[0] / "cmp" / "active_compare.json").read_text())
    assert set(blob["strategies"]) == {"random", "entropy"} and blob["seeds"] == [0, 1]
    for st in blob["strategies"].values():
        assert st["labels"] == [8, 16] and len(st["mean"]) == 2 and all(s >= 0 for s in st["std"])
    ref = blob["reference"]
    assert ref["labels"] == 160 - len(leaked_train_texts(taught[2])) and len(ref["runs"]) == 2
    assert ref["mean"] >= 0.5  # trained on every pool label the student learns the task (chance: 0.25)
    for st in blob["strategies"].values():
        want = labels_to_reach(st["labels"], st["mean"], 0.95 * ref["mean"])
        assert st["labels_to_reach"] == want
        assert len(st["ci95"]) == len(st["mean"]) and st["seeds_reaching"] == sum(
            v is not None for v in st["labels_to_reach_per_seed"])
    assert (taught[0] / "cmp" / "plots" / "label_efficiency.png").is_file()
    assert "## Label efficiency" in (taught[0] / "cmp" / "report.md").read_text()
    page = (taught[0] / "cmp" / "report.html").read_text()
    assert "<th>labels to reach target</th>" in page and page.count('src="data:image/png;base64,') == 1
    # a second call reads the finished sub-runs back instead of training them again
    again = compare_strategies(cfg, ["random", "entropy"], seeds=2)
    assert again["strategies"]["entropy"]["mean"] == result["strategies"]["entropy"]["mean"]
    one = compare_strategies(cfg, ["random"], seeds=2, full=1)  # the reference on the first seed only
    assert one["reference"]["runs"] == ref["runs"][:1] and one["strategies"]["random"]["seeds"] == 2
    first = compare_strategies(cfg, ["random"], seeds=[1, 0], full=1)  # the first of the seeds given: 1
    assert first["reference"]["runs"] == ref["runs"][1:]


def test_active_on_real_agnews_text(shared_data, tiny_bert, tmp_path):
    """Real news text through the whole loop: a 600-example AG News pool, no teacher (alpha 0)."""
    cfg = {
        "model": {"teacher": {"name": tiny_bert},
                  "student": {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}},
        "data": {"train": str(shared_data / "agnews" / "train.tsv"), "test": str(shared_data / "agnews" / "test.tsv"),
                 "header": False, "columns": ["text", "label"], "max_train_examples": 600, "max_length": 48},
        "distill": {"alpha": 0.0},
        "train": {"epochs": 2, "lr": 5e-3, "batch_size": 32, "patience": None},
        "active": {"strategy": "badge", "initial": 40, "per_round": 40, "rounds": 2, "min_steps": 10,
                   "evaluate_test": False},
        "run": {"name": "agnews", "output_dir": str(tmp_path), "quiet": True},
    }
    out = kdflow.active(cfg)
    assert [r["labels"] for r in out["rounds"]] == [40, 80] and out["teacher_queries"] == 0
    state = json.loads((tmp_path / "agnews" / "active" / "state.json").read_text())
    assert {v["label"] for v in state["labels"].values()} <= {"World", "Sports", "Business", "Sci/Tech"}
    assert "test" not in out["rounds"][0]


def test_warm_start_continues_from_the_last_round_and_diversity_runs_in_the_loop(taught, monkeypatch):
    starts, saved = [], []
    real_fit, real_save = rounds_mod.fit, Context.save_student

    def spy_fit(model, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_fit(model, *args, **kwargs)

    def spy_save(self, model, snaps, r):
        saved.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_save(self, model, snaps, r)
    monkeypatch.setattr(rounds_mod, "fit", spy_fit)
    monkeypatch.setattr(Context, "save_student", spy_save)
    out = kdflow.active(al_cfg(taught, "warm", strategy="entropy", retrain="warm", diversity=3, rounds=2))
    assert len(out["rounds"]) == 2 and out["batches"][1]["k"] == 8
    # warm: round 1 starts from the weights round 0 ended with (and saved)
    assert all(torch.equal(starts[1][k], saved[0][k]) for k in saved[0])
    assert any(not torch.equal(starts[0][k], starts[1][k]) for k in starts[0])
    starts.clear()
    scratch = kdflow.active(al_cfg(taught, "scratch", strategy="entropy", retrain="scratch", rounds=2))
    assert len(scratch["rounds"]) == 2
    assert all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])  # from scratch: the same start each round


def test_label_files_from_spreadsheets_and_label_studio(tmp_path):
    """Formats people actually hand back: Excel's BOM CSV, Label Studio CSV / JSON / JSON-MIN exports."""
    from kdflow.active.oracles import read_labels
    names, asked = ["neg", "pos"], ["train:a", "train:b"]
    bom = tmp_path / "excel.csv"
    bom.write_bytes("id,text,label\r\ntrain:a,good,pos\r\ntrain:b,\"bad,\nvery\",neg\r\n".encode("utf-8-sig"))
    assert read_labels(bom, asked, names) == ({"train:a": "pos", "train:b": "neg"}, [])
    ls_csv = tmp_path / "ls.csv"  # Label Studio's CSV export: its own task id beside ours
    ls_csv.write_text("id,kdflow_id,text,label\n17,train:a,good,pos\n18,train:b,bad,neg\n")
    assert read_labels(ls_csv, asked, names)[0] == {"train:a": "pos", "train:b": "neg"}
    json_min = tmp_path / "min.json"
    json_min.write_text(json.dumps([{"id": 17, "kdflow_id": "train:a", "label": "pos"},
                                    {"id": 18, "kdflow_id": "train:b", "label": "neg"}]))
    assert read_labels(json_min, asked, names)[0] == {"train:a": "pos", "train:b": "neg"}

    def task(key, *answers, cancelled=()):
        anns = [{"was_cancelled": i in cancelled, "result": [{"type": "choices", "value": {"choices": list(a)}}]}
                for i, a in enumerate(answers)]
        return {"id": 1, "data": {"kdflow_id": key}, "annotations": anns}
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps([task("train:a", ["pos"], ["neg"], cancelled=(1,)), task("train:b", ["neg"], ["neg"])]))
    assert read_labels(ok, asked, names)[0] == {"train:a": "pos", "train:b": "neg"}  # cancelled one ignored
    cases = [([task("train:a", ["pos"], ["neg"]), task("train:b", ["neg"])], "Item 0 .*annotations that disagree"),
             ([task("train:a", ["pos"]), task("train:b", ["pos", "neg"])], "Item 1 .*ticks 2 choices"),
             ([{"data": "train:a", "annotations": []}], "Item 0 .*no data.kdflow_id"),
             ([{"data": {"kdflow_id": "train:a"}, "annotations": ["x"]}], "Item 0 .*malformed annotations")]
    for items, message in cases:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(items))
        with pytest.raises(KdflowError, match=message):
            read_labels(bad, asked, names)
    long = tmp_path / "long.csv"  # the pool's long documents come back in to_label.csv
    long.write_text("id,text,label\ntrain:a," + "x" * 200_000 + ",pos\ntrain:b,y,neg\n")
    assert read_labels(long, asked, names)[0]["train:a"] == "pos"
    broken = tmp_path / "broken.csv"
    broken.write_text('id,label\ntrain:a,pos\ntrain:b,"neg\n')
    with pytest.raises(KdflowError, match="Line 3 of .* is not valid CSV"):
        read_labels(broken, asked, names)


def test_pool_scoring_moves_the_student_to_the_device_and_breaks_ties_like_top_k(taught):
    """The round's student sits on the CPU after training; scoring must put it where the inputs go.
    And a streamed short list keeps the same tied examples top_k would pick."""
    from kdflow.active.outputs import PoolPass, stream_pool
    from kdflow.active.strategies import top_k
    from kdflow.config import load_config
    from kdflow.data import TextFeaturizer, load_data
    from kdflow.models import load_saved
    model, tok, _, _ = load_saved(taught[0] / "teach" / "teacher")
    pool = load_data(load_config(al_cfg(taught, "x")).data).train
    moved = []
    real_to = model.to
    model.to = lambda *a, **k: (moved.append(a[0] if a else k.get("device")), real_to(*a, **k))[1]
    pos = np.arange(len(pool))
    with torch.no_grad():  # a model that says the same about everything: every score ties
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == 4:
                m.weight.zero_()
                m.bias.zero_()
    out = stream_pool(model, pool, pos, lambda: TextFeaturizer(tok, 32), "cpu",
                      PoolPass("entropy", 4, batch_size=16, chunk=40, need_embeddings=True, keep_top=12, seed=11))
    assert moved and str(moved[0]) == "cpu"
    np.testing.assert_array_equal(out.embedding_rows, np.sort(top_k(out.scores, 12, pos, seed=11)))
