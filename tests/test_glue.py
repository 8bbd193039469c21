"""GLUE: every task's layouts and labels (real files where ../shared has them, hand-written rows in the
GLUE layout where it does not), the task metrics, and a pair task and the regression task end to end."""

import json
import random

import numpy as np
import pytest

import kdflow
from kdflow import KdflowError
from kdflow.config import Config, DataConfig
from kdflow.data import load_data
from kdflow.data.hub import read_glue_hub
from kdflow.config.glue import GLUE_TASKS, glue_of_hub
from kdflow.metrics import quality

from conftest import tiny_config
from margins import at_least, at_most


def write(path, lines):
    path.write_text("\n".join("\t".join(map(str, row)) for row in lines) + "\n", encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------ real files

def test_real_glue_files_in_their_own_layouts(shared_data):
    g = shared_data / "glue"
    rte = load_data(DataConfig(glue="rte", train=str(g / "rte/train.tsv"), test=str(g / "rte/dev.tsv")))
    assert (len(rte.train) + len(rte.validation), len(rte.test)) == (2490, 277)
    assert rte.label_names == ["entailment", "not_entailment"] and rte.modality == "text"
    assert rte.train.inputs["text_pair"] and rte.test.inputs["text"][0].startswith("Dana Reeve")

    # the original Microsoft files: BOM, '#1 String' / '#2 String', Quality 1 = paraphrase
    mrpc = load_data(DataConfig(glue="mrpc", train=str(g / "mrpc/msr_paraphrase_train.txt"),
                                test=str(g / "mrpc/msr_paraphrase_test.txt")))
    assert (len(mrpc.train) + len(mrpc.validation), len(mrpc.test)) == (4076, 1725)
    assert mrpc.label_names == ["not_equivalent", "equivalent"]
    assert mrpc.test.targets.mean() == pytest.approx(1147 / 1725)  # 66.5 % paraphrases in the test file

    # STS benchmark: tab-separated despite .csv, no header, some rows with two extra fields
    stsb = load_data(DataConfig(glue="stsb", train=str(g / "stsb/sts-train.csv"),
                                validation=str(g / "stsb/sts-dev.csv"), test=str(g / "stsb/sts-test.csv")))
    assert stsb.task == "regression" and stsb.label_names is None
    assert (len(stsb.train), len(stsb.validation), len(stsb.test)) == (5749, 1500, 1379)
    assert stsb.train.inputs["text"][0] == "A plane is taking off."
    assert stsb.train.inputs["text_pair"][0] == "An air plane is taking off."
    assert stsb.train.targets[0] == 5.0 and 0 <= stsb.train.targets.min() and stsb.train.targets.max() <= 5

    cola = load_data(DataConfig(glue="cola", train=str(g / "cola/train.tsv"), test=str(g / "cola/dev_in_domain.tsv"),
                                extra_tests={"out_of_domain": str(g / "cola/dev_out_of_domain.tsv")}))
    assert (len(cola.train) + len(cola.validation), len(cola.test)) == (8551, 527)
    assert len(cola.extra_tests["out_of_domain"]) == 516 and "text_pair" not in cola.train.inputs
    assert cola.split("out_of_domain") is cola.extra_tests["out_of_domain"]


def test_glue_presets_pick_the_metric_and_the_task():
    def cfg(glue, **train):
        return Config(data={"glue": glue, "train": "x.tsv"}, train=train)
    assert cfg("cola").train.metric == "mcc" and cfg("cola").teach.metric == "mcc"
    assert cfg("mrpc").train.metric == "f1" and cfg("qqp").train.metric == "f1"
    assert cfg("stsb").train.metric == "pearson" and cfg("stsb").data.task == "regression"
    assert cfg("mnli").train.metric == "accuracy"
    assert cfg("cola", metric="accuracy").train.metric == "accuracy"  # a chosen metric stays
    assert cfg("stsb", metric="spearman").train.metric == "spearman"
    with pytest.raises(ValueError, match="regression task"):
        Config(data={"glue": "stsb", "train": "x.tsv", "task": "classification"})
    with pytest.raises(ValueError, match="not a regression metric"):
        cfg("stsb", metric="mcc")
    with pytest.raises(ValueError, match="data.glue reads one file per split"):
        Config(data={"glue": "rte", "path": "x.json"})
    assert Config(data={"hub": "glue/mrpc"}).data.glue == "mrpc"
    assert Config(data={"hub": "nyu-mll/glue", "hub_config": "stsb"}).train.metric == "pearson"
    assert glue_of_hub("SetFit/sst2", None) is None and glue_of_hub("glue/ax", None) is None


def test_task_metrics_on_hand_computed_cases():
    logits = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([1, 0, 0, 1, 1])  # pred 1 1 0 0 1: TP 2, FP 1, FN 1
    q = quality(logits, y, "classification")
    assert q["f1"] == pytest.approx(2 / 3) and q["accuracy"] == pytest.approx(0.6)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3 * 3 * 2 * 2)
    assert q["mcc"] == pytest.approx(1 / 6)
    assert "f1" not in quality(np.eye(3), np.arange(3), "classification")  # binary only
    r = quality(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 10.0]), "regression")
    assert r["spearman"] == pytest.approx(1.0) and r["pearson"] < 0.95


# ------------------------------------------------------------------ hand-written rows, GLUE layouts

MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def mnli_rows(n, genre, dev=False):
    labels = ["entailment", "neutral", "contradiction"]
    head = MNLI_HEAD + (["label1", "label2", "label3", "label4", "label5"] if dev else ["label1"]) + ["gold_label"]
    rows = [head]
    for i in range(n):
        y = labels[i % 3]
        extra = [y] * (5 if dev else 1)
        rows.append([i, i, f"{i}e", genre, "( ( a ) b )", "( c )", "(ROOT a)", "(ROOT c)",
                     f'He said "{genre} {i}" twice.', f"{y} hypothesis {i}", *extra, y])
    return rows


def test_mnli_glue_tsv_with_matched_and_mismatched_dev(tmp_path):
    d = load_data(DataConfig(glue="mnli", train=write(tmp_path / "train.tsv", mnli_rows(30, "fiction")),
                             test=write(tmp_path / "dev_matched.tsv", mnli_rows(6, "fiction", dev=True)),
                             extra_tests={"mismatched": write(tmp_path / "dev_mismatched.tsv",
                                                              mnli_rows(9, "letters", dev=True))}))
    assert d.label_names == ["entailment", "neutral", "contradiction"]
    assert d.test.targets.tolist() == [0, 1, 2, 0, 1, 2]
    assert len(d.extra_tests["mismatched"]) == 9 and d.extra_tests["mismatched"].name == "test_mismatched"
    assert d.test.inputs["text"][0] == 'He said "fiction 0" twice.'  # quotes are text, not CSV quoting
    assert d.test.inputs["text_pair"][1] == "neutral hypothesis 1"


def test_qnli_qqp_and_the_header_less_glue_cola(tmp_path):
    qnli = load_data(DataConfig(glue="qnli", train=write(tmp_path / "qnli.tsv", [
        ["index", "question", "sentence", "label"], *[[i, f"q{i}?", f"s{i}.", ["entailment", "not_entailment"][i % 2]]
                                                      for i in range(20)]])))
    assert qnli.train.inputs["text"][0].startswith("q") and qnli.label_names == ["entailment", "not_entailment"]
    qqp = load_data(DataConfig(glue="qqp", train=write(tmp_path / "qqp.tsv", [
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        *[[i, 2 * i, 2 * i + 1, f"how {i}", f"what {i}", i % 2] for i in range(20)]])))
    assert sorted(set(qqp.train.targets.tolist())) == [0, 1] and qqp.train.inputs["text_pair"][0].startswith("what")
    # GLUE's CoLA train.tsv: no header, source / label / original label / sentence
    cola = load_data(DataConfig(glue="cola", train=write(tmp_path / "in_domain_train.tsv", [
        ["gj04", i % 2, "" if i % 2 else "*", f"sentence number {i} ."] for i in range(20)])))
    texts = dict(zip(cola.train.inputs["text"] + cola.validation.inputs["text"],
                     cola.train.targets.tolist() + cola.validation.targets.tolist()))
    assert texts["sentence number 3 ."] == 1 and texts["sentence number 4 ."] == 0


def test_stsb_glue_tsv_and_extra_trailing_fields(tmp_path):
    glue = write(tmp_path / "train.tsv", [
        ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"],
        *[[i, "main", "f", "2012", i, "none", "none", f"a {i}", f"b {i}", i / 4] for i in range(20)]])
    d = load_data(DataConfig(glue="stsb", train=glue))
    assert d.task == "regression" and sorted((d.train + d.validation).targets.tolist())[-1] == pytest.approx(4.75)
    orig = write(tmp_path / "sts-train.csv", [["main-news", "MSRpar", "2012", f"{i:04d}", 2.5, f"x {i}", f"y {i}"]
                                              + (["src-a", "src-b"] if i % 3 == 0 else []) for i in range(20)])
    d = load_data(DataConfig(glue="stsb", train=orig))
    assert all(t.startswith("x ") for t in d.train.inputs["text"])
    assert all(p.startswith("y ") for p in d.train.inputs["text_pair"])


def test_hub_glue_uses_dev_as_test_and_mnli_mismatched(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
                               "idx": datasets.Value("int32")})

    def part(n, tag):
        return datasets.Dataset.from_dict({"premise": [f"{tag} p{i}" for i in range(n)],
                                           "hypothesis": [f"h{i}" for i in range(n)],
                                           "label": [i % 3 for i in range(n)], "idx": list(range(n))}, features=feats)
    ds = datasets.DatasetDict({"train": part(12, "tr"), "validation_matched": part(6, "m"),
                               "validation_mismatched": part(3, "mm"), "test_matched": part(2, "t")})
    notes = []
    parts = read_glue_hub(ds, DataConfig(hub="glue/mnli"), notes)
    assert set(parts) == {"train", "test", "test_mismatched"}
    assert parts["test"][1][:3] == ["entailment", "neutral", "contradiction"]
    assert parts["test_mismatched"][0]["text"][0] == "mm p0" and "validation_matched" in notes[-1]
    with pytest.raises(KdflowError, match="has no split validation_matched"):
        read_glue_hub(datasets.DatasetDict({"train": part(3, "x")}), DataConfig(hub="glue/mnli"), [])


def test_bad_glue_files_get_one_clear_sentence(tmp_path):
    unlabelled = write(tmp_path / "test.tsv", [["index", "sentence1", "sentence2"], [0, "a", "b"]])
    with pytest.raises(KdflowError, match="GLUE test files carry no labels"):
        load_data(DataConfig(glue="rte", train=unlabelled))
    bad = write(tmp_path / "bad.tsv", [["sentence1", "sentence2", "label"], ["a", "b", "maybe"]])
    with pytest.raises(KdflowError, match=r"Label 'maybe' \(line 2 of .*0 = entailment, 1 = not_entailment"):
        load_data(DataConfig(glue="rte", train=bad))
    short = write(tmp_path / "short.tsv", [["sentence1", "sentence2", "label"], ["a", "b", "0"], ["only one"]])
    with pytest.raises(KdflowError, match="line 3 of .* has 1 tab-separated fields"):
        load_data(DataConfig(glue="rte", train=short))
    other = write(tmp_path / "other.tsv", [["q", "a", "y"], ["a", "b", "0"]])
    with pytest.raises(KdflowError, match="is not in a rte layout .*sentence1 / sentence2 / label"):
        load_data(DataConfig(glue="rte", train=other))
    # the user's own column names override the layouts
    d = load_data(DataConfig(glue="rte", train=other, text_column="q", text_pair_column="a", label_column="y",
                             validation=other))
    assert d.train.inputs["text_pair"] == ["b"] and d.label_names == ["entailment", "not_entailment"]


# ------------------------------------------------------------------ end to end on a tiny model

def synthetic_pairs(tmp_path, seed):
    """RTE layout; the label is whether the hypothesis is negated, so a tiny model can learn it. Files of
    different seeds hold different pairs and no pair repeats (active learning's pool drops held-out inputs)."""
    subjects = ["the cat", "a man", "my friend", "the city", "our team", "her dog", "the bird", "a child"]
    verbs = ["runs", "sleeps", "wins", "reads", "sings", "jumps", "cooks", "swims"]
    places = ["today", "at home", "outside", "in the park", "at night"]
    combos = [(s, v, p, n) for s in subjects for v in verbs for p in places for n in (0, 1)]
    random.Random(0).shuffle(combos)
    rows = [["sentence1", "sentence2", "label", "idx"]]
    for i, (subject, verb, place, neg) in enumerate(combos[(seed - 1) * 160:seed * 160]):
        rows.append([f"{subject} {verb} {place} .", f"{subject} {'never ' if neg else ''}{verb} .", neg, i])
    return write(tmp_path / f"rte-{seed}.tsv", rows)


def synthetic_sts(tmp_path, seed):
    """STS benchmark layout; the score is how many of the pair's five words say 'yes'. Each file's first sentences
    are its own, so no test pair is a training pair (the leakage rule would refuse it)."""
    rng = random.Random(seed)
    firsts = [f"{who} {does}" for who in ("a man", "the dog", "two cars", "a woman", "the bird", "three kids")
              for does in ("plays", "runs", "stops", "waits")][seed - 1::2]
    rows = []
    for i in range(200):
        score = rng.randint(0, 5)
        words = ["yes"] * score + ["no"] * (5 - score)
        rng.shuffle(words)
        rows.append(["main-captions", "MSRvid", "2012test", f"{i:04d}", float(score),
                     rng.choice(firsts), " ".join(words)]
                    + (["x", "y"] if i % 7 == 0 else []))
    return write(tmp_path / f"sts-{seed}.csv", rows)


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_a_pair_task_and_the_regression_task_end_to_end(task, tmp_path, tiny_bert):
    make = synthetic_pairs if task == "rte" else synthetic_sts
    raw = tiny_config(tiny_bert, "", tmp_path, task)
    raw["data"] = {"glue": task, "train": make(tmp_path, 1), "test": make(tmp_path, 2), "max_length": 32}
    # teacher: lr 3e-3 with 10 % warm-up; at tiny_config's 1e-2 without, 2 seeds of 10 never left chance (0.45)
    raw["teach"].update(epochs=10, lr=3e-3, warmup_ratio=0.1)
    raw["train"]["epochs"] = 20
    raw["distill"] = {"alpha": 0.9}
    teacher = kdflow.teach(raw)
    student = kdflow.distill(raw)
    metric = "accuracy" if task == "rte" else "pearson"
    at_least(f"glue: synthetic {task} teacher test {metric}", teacher["test"][metric], 0.7 if task == "rte" else 0.45)
    at_least(f"glue: synthetic {task} student test {metric}", student["test"][metric],  # chance: 0.5 and 0
             0.65 if task == "rte" else 0.45)
    d = load_data(Config(**raw).data)
    assert student["distill"]["teacher_examples_computed"] == len(d.train) + len(d.test)  # once each, cached
    metrics = json.loads((tmp_path / task / "metrics.json").read_text())
    assert metrics["student"]["test"][metric] == pytest.approx(student["test"][metric])
    if task == "stsb":
        assert set(student["test"]) == {"mse", "neg_mse", "pearson", "spearman"}
        assert Config(**raw).train.metric == "pearson"  # model selection on the task's metric
    else:
        assert "f1" in student["test"] and "mcc" in student["test"]
    assert (tmp_path / task / "report.md").is_file()
    if task == "rte":  # pairs through export (token_type_ids into ONNX) and active learning
        from kdflow.api import export
        from kdflow.deploy.compare import MeasureOptions
        rows = export(str(tmp_path / task), MeasureOptions(onnx=True, int8=False, memory=False))
        onnx = next(r for r in rows if r["model"] == "student-onnx")
        at_most("glue: |onnx - pytorch| rte test accuracy", abs(onnx["accuracy"] - student["test"]["accuracy"]), 0.02)
        raw["run"]["name"] = "rte-active"
        raw["model"]["teacher"]["name"] = str(tmp_path / task / "teacher")
        raw["active"] = {"initial": 16, "per_round": 16, "rounds": 2, "min_steps": 20, "strategy": "entropy"}
        out = kdflow.active(raw)
        assert out["status"] == "done" and [r["labels"] for r in out["rounds"]] == [16, 32]
        state = json.loads((tmp_path / "rte-active" / "active" / "state.json").read_text())
        assert len(state["labels"]) == 32 and {v["source"] for v in state["labels"].values()} == {"gold"}


def test_f1_on_a_multi_class_task_is_refused_before_work(tmp_path, tiny_bert, intents_json):
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "f1", train={"metric": "f1"})
    with pytest.raises(KdflowError, match="train.metric f1 is the F1 of label 1 in a binary task"):
        kdflow.distill(raw)
    assert not (tmp_path / "f1").exists()


def test_every_glue_task_has_a_layout_and_metric():
    for name, task in GLUE_TASKS.items():
        assert task.layouts and task.metrics[0] in (("pearson",) if name == "stsb" else ("accuracy", "f1", "mcc"))
        assert task.pair == (name not in ("cola", "sst2"))


def test_the_run_table_shows_extra_test_sets():
    from rich.console import Console

    from kdflow.diagnose.console import run_table
    entry = {"parameters": 10, "best_epoch": 2, "train_seconds": 1.0, "validation": {"accuracy": 0.5},
             "test": {"accuracy": 0.61}, "test_mismatched": {"accuracy": 0.57}, "teacher_test": {"accuracy": 0.7},
             "compression": 2.0}
    console = Console(width=200, record=True)
    console.print(run_table("student", entry))
    text = console.export_text()
    assert "student, mismatched test" in text and "0.5700" in text and "87.1%" in text


def test_a_reloaded_config_keeps_column_detection():
    # a run's config.yaml lists every key: reading it back must not turn the default columns into choices
    dumped = DataConfig(glue="rte", train="t.tsv").model_dump(mode="json")
    assert DataConfig(**dumped).columns_given() == set()
    assert DataConfig(**{**dumped, "text_column": "q"}).columns_given() == {"text_column"}
