"""Multi-label classification (``data.task: multilabel``): readers, per-label KD, thresholds, the commands."""

import csv
import json
import math
import random

import numpy as np
import pytest
import torch
import yaml

import kdflow
from kdflow.cli import main
from kdflow.config import load_config
from kdflow.data import load_data
from kdflow.distillation.losses import bce_loss, binary_kd_loss
from kdflow.errors import KdflowError
from kdflow.models import saved_decision
from kdflow.tasks.multilabel import majority, scores_of, tune_thresholds

from conftest import tiny_config


def data_cfg(**data):
    return load_config({"data": {"task": "multilabel", **data}}).data


# ------------------------------------------------------------------ readers

def test_label_sets_from_json_jsonl_delimited_cells_and_flag_columns(tmp_path):
    nlupp = [{"text": "a spa and a room", "intents": ["spa", "room"]}, {"text": "hello there"},
             {"text": "just the room", "intents": ["room"], "slots": {}}]
    (tmp_path / "t.json").write_text(json.dumps(nlupp))
    d = load_data(data_cfg(train=str(tmp_path / "t.json"), validation=str(tmp_path / "t.json"),
                           label_column="intents"))
    assert d.label_names == ["room", "spa"] and d.num_labels == 2
    assert d.train.targets.tolist() == [[1, 1], [0, 0], [1, 0]] and d.train.targets.dtype == np.float32
    assert d.train.labelled.tolist() == [0, 1, 2]  # no label is an answer, not a missing one
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in nlupp))
    jl = load_data(data_cfg(train=str(tmp_path / "t.jsonl"), validation=str(tmp_path / "t.jsonl"),
                            label_column="intents"))
    assert jl.train.targets.tolist() == d.train.targets.tolist()
    (tmp_path / "t.csv").write_text('text,label\nfirst,spa|room\nsecond,\nthird,room|\nfourth,"[""spa""]"\n')
    csv = load_data(data_cfg(train=str(tmp_path / "t.csv"), validation=str(tmp_path / "t.csv"), label_delimiter="|"))
    assert csv.label_names == ["room", "spa"] and csv.train.targets.tolist() == [[1, 1], [0, 0], [1, 0], [0, 1]]
    (tmp_path / "f.csv").write_text("text,spa,room\nfirst,1,0\nsecond,0,0\nthird,true,yes\n")
    flags = load_data(data_cfg(train=str(tmp_path / "f.csv"), validation=str(tmp_path / "f.csv"),
                               label_columns=["spa", "room"]))
    assert flags.label_names == ["room", "spa"] and flags.train.targets.tolist() == [[0, 1], [0, 0], [1, 1]]
    # data.label_names: the output order, and labels train never shows
    named = load_data(data_cfg(train=str(tmp_path / "t.json"), validation=str(tmp_path / "t.json"),
                               label_column="intents", label_names=["spa", "wifi", "room"]))
    assert named.label_names == ["spa", "wifi", "room"] and named.train.targets.tolist()[0] == [1, 0, 1]


def test_label_set_mistakes_get_one_sentence(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([{"text": "x", "intents": ["spa"]}, {"text": "y"}]))
    (tmp_path / "val.json").write_text(json.dumps([{"text": "z", "intents": ["gym"]}]))
    with pytest.raises(KdflowError, match="Label 'gym' \\(row 0 of the validation split\\) does not occur in train; "
                                          ".*or list them all in data.label_names"):
        load_data(data_cfg(train=str(tmp_path / "train.json"), validation=str(tmp_path / "val.json"),
                           label_column="intents"))
    with pytest.raises(KdflowError, match="Label 'gym' .* is not one of data.label_names; add it there"):
        load_data(data_cfg(train=str(tmp_path / "train.json"), validation=str(tmp_path / "val.json"),
                           label_column="intents", label_names=["spa"]))
    (tmp_path / "bad.csv").write_text("text,spa\nfirst,2\n")
    with pytest.raises(KdflowError, match="holds '2' in label column 'spa'; a label column holds 1 or 0"):
        load_data(data_cfg(train=str(tmp_path / "bad.csv"), validation=str(tmp_path / "bad.csv"),
                           label_columns=["spa"]))
    (tmp_path / "nested.json").write_text(json.dumps([{"text": "x", "label": [["a"]]}]))
    with pytest.raises(KdflowError, match="an empty or nested label in column 'label'"):
        load_data(data_cfg(train=str(tmp_path / "nested.json"), validation=str(tmp_path / "nested.json")))
    (tmp_path / "broken.csv").write_text('text,label\nfirst,"[spa"\n')
    with pytest.raises(KdflowError, match="starts like a JSON array and is not one"):
        load_data(data_cfg(train=str(tmp_path / "broken.csv"), validation=str(tmp_path / "broken.csv")))
    # a list of labels in a single-label task, and set-reading keys without multilabel
    (tmp_path / "lists.json").write_text(json.dumps([{"text": "x", "label": ["a", "b"]}, {"text": "y", "label": "a"}]))
    with pytest.raises(KdflowError, match="holds a list of labels \\(\\['a', 'b'\\]\\), and data.task classification "
                                          "takes one label per example; set data.task: multilabel"):
        load_data(load_config({"data": {"train": str(tmp_path / "lists.json")}}).data)
    with pytest.raises(KdflowError, match="data.label_delimiter reads sets of labels, and data.task classification"):
        load_config({"data": {"train": "x.csv", "label_delimiter": "|"}})
    with pytest.raises(KdflowError, match="data.label_names names classes, and data.task regression has none"):
        load_config({"data": {"train": "x.csv", "task": "regression", "label_names": ["a"]}})
    with pytest.raises(KdflowError, match="micro_f1' is not a classification metric"):
        load_config({"data": {"train": "x.csv"}, "train": {"metric": "micro_f1"}})
    assert load_config({"data": {"train": "x.csv", "task": "multilabel"}}).train.metric == "micro_f1"


def test_nlupp_fold_files_read_directly(shared_data):
    fold = shared_data / "nlupp" / "hotels" / "fold0.json"
    d = load_data(data_cfg(train=str(fold), validation=str(fold), label_column="intents"))
    rows = json.loads(fold.read_text())
    assert len(d.train) == len(rows) and d.train.targets.shape == (len(rows), len(d.label_names))
    assert int((d.train.targets.sum(1) == 0).sum()) == sum("intents" not in r for r in rows)
    assert d.train.targets.sum() == sum(len(r.get("intents", [])) for r in rows)


# ------------------------------------------------------------------ losses and decisions by hand

def test_binary_kd_and_bce_against_a_hand_computation():
    s, t, temp = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.5]]), 2.0

    def sig(x):
        return 1 / (1 + math.exp(-x))
    per_label = []
    for a, b in zip(s[0].tolist(), t[0].tolist()):
        p, q = sig(b / temp), sig(a / temp)
        per_label.append(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
    assert binary_kd_loss(s, t, temp).item() == pytest.approx(temp ** 2 * sum(per_label), rel=1e-6)
    assert binary_kd_loss(t, t, temp).item() == pytest.approx(0.0, abs=1e-7)
    y = torch.tensor([[1.0, 0.0]])
    hand = -(math.log(sig(1.0)) + math.log(1 - sig(-2.0)))  # summed over labels
    assert bce_loss(s, y).item() == pytest.approx(hand, rel=1e-6)
    # a row without labels (NaN: the transfer set) changes nothing, and gives no gradient
    both = torch.cat([s, torch.tensor([[5.0, 5.0]])]).requires_grad_(True)
    loss = bce_loss(both, torch.cat([y, torch.full((1, 2), float("nan"))]))
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    loss.backward()
    assert torch.equal(both.grad[1], torch.zeros(2)) and torch.isfinite(both.grad).all()


def test_scores_thresholds_and_the_most_frequent_set_by_hand():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=bool)
    pred = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    # tp 3, fp 1, fn 1: micro F1 6/8; per label F1: 1, 0, 1 -> macro 2/3; 2 of 4 rows exact; 2 of 12 cells wrong
    assert scores_of(pred, y) == pytest.approx({"micro_f1": 0.75, "macro_f1": 2 / 3, "subset_accuracy": 0.5,
                                                "hamming_loss": 2 / 12})
    # label 0 is sure (p 0.9) where true, label 1 is right only at a low threshold (p 0.3 where true, 0.1 where not)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    probs = np.array([[0.9, 0.3], [0.9, 0.1], [0.2, 0.3], [0.2, 0.1]])
    truth = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    tuned = tune_thresholds(np.vectorize(logit)(probs), truth)
    assert tuned["micro_f1"]["at_0.5"] == pytest.approx(2 / 3)  # label 1 never predicted at 0.5
    assert tuned["per_label"][1] in (0.15, 0.2, 0.25, 0.3) and tuned["micro_f1"]["per_label"] == pytest.approx(1.0)
    assert tuned["per_label"][1] == 0.3  # the candidate nearest 0.5 among the equally good ones
    # the baseline: the commonest set, ties broken towards the smaller one
    common = majority(np.array([[0, 0], [1, 1], [0, 0], [1, 1], [1, 0]], dtype=np.float32), 3, 2)
    assert (common < 0).all() and common.shape == (3, 2)


# ------------------------------------------------------------------ the commands

def label_sets(n: int, seed: int) -> list[dict]:
    """Texts whose labels are the keywords they hold (0-2 of 4), so a tiny model can learn them."""
    rng = random.Random(seed)
    words = {"pool": "spa", "cancel": "cancel", "room": "room", "wifi": "wifi"}
    filler = "please could you tell me about the thing here now today".split()
    rows = []
    for _ in range(n):
        keys = rng.sample(list(words), rng.randint(0, 2))
        toks = rng.sample(filler, 4) + keys
        rng.shuffle(toks)
        rows.append({"text": " ".join(toks), **({"intents": sorted({words[k] for k in keys})} if keys else {})})
    return rows


@pytest.fixture(scope="module")
def ml_cfg(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("multilabel")
    for name, n, seed in (("train", 160, 1), ("val", 40, 2), ("test", 40, 3)):
        (folder / f"{name}.json").write_text(json.dumps(label_sets(n, seed)))
    raw = tiny_config(tiny_bert, None, folder, "ml")
    raw["data"] = {"train": str(folder / "train.json"), "validation": str(folder / "val.json"),
                   "test": str(folder / "test.json"), "task": "multilabel", "label_column": "intents",
                   "max_length": 32, "allow_overlap": True}
    return folder, raw


def test_teach_distill_evaluate_through_main_keep_the_tuned_thresholds(ml_cfg, capsys):
    folder, raw = ml_cfg
    path = folder / "ml.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["teach", str(path), "--quiet"]) == 0
    taught = json.loads((folder / "ml" / "metrics.json").read_text())["teacher"]
    decision = saved_decision(folder / "ml" / "teacher")
    assert decision == taught["decision"] and len(decision["per_label"]) == 4
    # epochs are chosen by validation micro-F1 at the thresholds tuned there, as the kept model is scored: the best
    # epoch's row holds exactly the final validation score
    best = next(r for r in csv.DictReader((folder / "ml" / "metrics.csv").open())
                if r["role"] == "teacher" and int(r["epoch"]) + 1 == taught["best_epoch"])  # best_epoch counts from 1
    assert float(best["val_micro_f1"]) == pytest.approx(taught["validation"]["micro_f1"], abs=1e-6)
    assert set(taught["test"]) == {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"}
    # evaluate reads the thresholds back: the same test scores as the run's own
    assert main(["evaluate", str(folder / "ml" / "teacher"), "--config", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in taught["test"]} == taught["test"]
    raw2 = {**raw, "model": {**raw["model"], "teacher": {"name": str(folder / "ml" / "teacher")}},
            "distill": {"alpha": 0.7, "temperature": 2.0}}
    path.write_text(yaml.safe_dump(raw2))
    assert main(["distill", str(path), "--quiet"]) == 0
    student = json.loads((folder / "ml" / "metrics.json").read_text())["student"]
    assert student["distill"]["logit_loss"] == "hinton" and "loss_kd" in (folder / "ml" / "metrics.csv").read_text()
    assert saved_decision(folder / "ml" / "student") == student["decision"]
    assert set(student["teacher_test"]) == set(taught["test"])
    # export: the ONNX graph returns scores, the thresholds beside it turn them into labels; each form is scored
    # with its model's thresholds
    assert main(["export", str(folder / "ml"), "--onnx", "--no-memory", "--latency-examples", "4",
                 "--repeats", "1"]) == 0
    beside = json.loads((folder / "ml" / "export" / "student.decision.json").read_text())
    assert beside["per_label"] == student["decision"]["per_label"] and beside["labels"] == ["cancel", "room", "spa",
                                                                                               "wifi"]
    rows = {r["model"]: r for r in json.loads((folder / "ml" / "metrics.json").read_text())["deploy"]}
    assert {"teacher", "student", "student-onnx"} <= set(rows) and "per_label" not in rows["student"]
    assert rows["student"]["micro_f1"] == pytest.approx(student["test"]["micro_f1"])
    # check: the empty-set / most-frequent-set baseline and the one-vs-rest control, in the task's own metric
    capsys.readouterr()
    assert main(["check", str(path)]) == 0
    said = capsys.readouterr().out
    assert "majority baseline: validation micro_f1" in said and "linear model on 160 training examples" in said


def test_what_does_not_apply_to_multilabel_is_refused_in_one_sentence(ml_cfg, tmp_path):
    folder, raw = ml_cfg
    kdflow.teach({**raw, "run": {**raw["run"], "name": "refusals"}})
    raw = {**raw, "model": {**raw["model"], "teacher": {"name": str(folder / "refusals" / "teacher")}}}
    cases = [({"active": {"initial": 8}}, "active", "active.strategy entropy is not meant for data.task multilabel"),
             ({"distill": {"logit_loss": "dkd"}}, "distill",
              "dkd is for classification and tokens, and this data is multilabel"),
             ({"distill": {"intermediate": True, "layers": "auto:1", "layer_score": "probe"}}, "distill",
              "probe fits a classifier to one class per example, and multilabel")]
    for extra, command, message in cases:
        cfg = {**raw, **extra, "run": {**raw["run"], "name": f"refused-{command}"}}
        with pytest.raises(KdflowError, match=message):
            getattr(kdflow, command)(cfg)


def test_mean_pooling_teacher_and_its_students(ml_cfg):
    """model.teacher.pooling: mean through teach and distill: saved with the teacher, inherited by the student."""
    folder, raw = ml_cfg
    kdflow.teach({**raw, "model": {**raw["model"], "teacher": {**raw["model"]["teacher"], "pooling": "mean"}},
                  "run": {**raw["run"], "name": "pooled"}})
    config = json.loads((folder / "pooled" / "teacher" / "config.json").read_text())
    assert config["kdflow_pooling"] == "mean" and "bert.pooler.dense.weight" not in \
        kdflow.models.load_saved(folder / "pooled" / "teacher")[0].state_dict()
    kdflow.distill({**raw, "model": {**raw["model"], "teacher": {"name": str(folder / "pooled" / "teacher")}},
                    "run": {**raw["run"], "name": "pooled"}})
    assert json.loads((folder / "pooled" / "student" / "config.json").read_text())["kdflow_pooling"] == "mean"


# ------------------------------------------------------------------ active learning

def test_multilabel_strategies_score_label_sets_by_hand():
    from kdflow.active.strategies import cardinality, mean_binary_entropy, select, threshold_margin, PoolOutputs
    p = np.array([[0.5, 0.01], [0.9, 0.1], [0.6, 0.99]])
    h = lambda x: -(x * np.log(x) + (1 - x) * np.log(1 - x))  # noqa: E731
    np.testing.assert_allclose(mean_binary_entropy(p), [(h(0.5) + h(0.01)) / 2, (h(0.9) + h(0.1)) / 2,
                                                        (h(0.6) + h(0.99)) / 2])
    np.testing.assert_allclose(threshold_margin(p), [0.0, -0.4, -0.1])
    np.testing.assert_allclose(cardinality(p, np.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.1]])), [0.49, 0.0, 1.39])
    out = PoolOutputs(n=3, probs=p, teacher_probs=np.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.1]]))
    assert select("threshold_margin", out, 1, np.arange(3), np.array([], dtype=np.int64)).tolist() == [0]
    assert select("cardinality", out, 1, np.arange(3), np.array([], dtype=np.int64)).tolist() == [2]


def test_active_learning_on_label_sets(ml_cfg):
    """Gold and teacher oracles buy label sets; the rounds train on multi-hot targets; target teacher too."""
    folder, raw = ml_cfg
    kdflow.teach({**raw, "run": {**raw["run"], "name": "al-teacher"}})
    base = {**raw, "model": {**raw["model"], "teacher": {"name": str(folder / "al-teacher" / "teacher")}},
            "distill": {"alpha": 0.5}}

    def run(name, **active):
        cfg = {**base, "run": {**raw["run"], "name": name},
               "active": {"initial": 16, "per_round": 16, "rounds": 2, "min_steps": 10, **active}}
        return kdflow.active(cfg), json.loads((folder / name / "active" / "state.json").read_text())
    out, state = run("al-gold", strategy="threshold_margin")
    assert [r["labels"] for r in out["rounds"]] == [16, 32] and out["batches"][0]["strategy"] == "initial (random)"
    rows = {r["text"]: sorted(r.get("intents", [])) for r in json.loads((folder / "train.json").read_text())}
    texts = dict(zip(load_data(load_config({"data": raw["data"]}).data).train.ids,
                     load_data(load_config({"data": raw["data"]}).data).train.inputs["text"]))
    for key, v in state["labels"].items():  # gold: the example's own label set, empty ones included
        assert v["label"] == rows[texts[key]] and v["source"] == "gold"
    assert set(out["rounds"][-1]["validation"]) >= {"micro_f1", "subset_accuracy"}
    taught, state = run("al-teacher-oracle", strategy="mean_binary_entropy", oracle="teacher")
    assert all(isinstance(v["label"], list) and v["source"] == "teacher" for v in state["labels"].values())
    card, _ = run("al-cardinality", strategy="cardinality")
    assert card["batches"][1]["strategy"] == "cardinality" and card["teacher_queries"] > 0
    target, state = run("al-target", strategy="threshold_margin", target="teacher", initial_strategy="typicality")
    assert [r["labels"] for r in target["rounds"]] == [16, 32] and "micro_f1" in target["rounds"][-1]["teacher"][
        "validation"]
    for active, message in ((dict(strategy="entropy"), "active.strategy entropy is not meant for data.task "
                                                        "multilabel; use one of random, coreset, mean_binary_entropy"),
                            (dict(strategy="threshold_margin", oracle="human"), "oracle human is not available for "
                                                                                 "multilabel"),
                            (dict(strategy="threshold_margin", initial_strategy="stratified"), "initial_strategy "
                                                                                                "stratified sorts")):
        with pytest.raises(KdflowError, match=message):
            run("al-refused", **active)


@pytest.mark.parametrize("name,extra", [
    ("online-transfer", {"distill": {"mode": "online", "alpha": 0.9}, "data": {"unlabelled": "unl.csv"}}),
    ("guide", {"distill": {"mode": "guide", "guide_every": 1}}),
    ("layers", {"distill": {"intermediate": True, "layers": "last:1", "logit_loss": "mse"}}),
    ("critical", {"distill": {"intermediate": True, "layers": "auto:1"}}),
    ("dkvb", {"model": {"student": {"kind": "dkvb"}}}),
])
def test_the_other_modes_and_students_distil_label_sets(ml_cfg, name, extra):
    folder, raw = ml_cfg
    unl = folder / "unl.csv"  # new texts: the transfer set (labelled by the teacher only)
    unl.write_text("text\n" + "\n".join(f"{r['text']} extra{i}" for i, r in enumerate(label_sets(30, 9))) + "\n")
    run = f"modes-{name}"
    cfg = {**raw, "run": {**raw["run"], "name": run}}
    kdflow.teach(cfg)
    cfg["model"] = {**raw["model"], "teacher": {"name": str(folder / run / "teacher")}}
    for section, values in extra.items():
        values = {k: str(unl) if v == "unl.csv" else v for k, v in values.items()}
        cfg[section] = {**cfg.get(section, {}), **values}
        if section == "model":
            cfg["model"] = {**cfg["model"], "student": values["student"]}
    if name == "guide":  # guide mode trains the teacher alongside: it starts from model.teacher as given
        cfg["model"] = raw["model"]
    out = kdflow.distill(cfg)
    assert set(out["test"]) == {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"}
    assert len(out["decision"]["per_label"]) == 4 and (folder / run / "student" / "kdflow_labels.json").is_file()
    assert "loss_kd" in (folder / run / "metrics.csv").read_text()
    if name == "online-transfer":
        assert "unlabelled (transfer set): 30 examples" in (folder / run / "log.txt").read_text()
    if name == "critical":  # the teacher's blocks ranked by the micro-F1 lost without each
        scores = json.loads((folder / run / "layers" / "layers.json").read_text())
        assert scores["metric"] == "micro_f1" and scores["probe"] is None and len(scores["drop"]) == 2
        assert "layer map (student block <- teacher block" in (folder / run / "log.txt").read_text()
