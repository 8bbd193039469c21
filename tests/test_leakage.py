"""The one overlap rule, pair-aware, where training data meets held-out data (transfer set, pool)."""

import csv

import numpy as np

from kdflow.config import DataConfig
from kdflow.data import Split, example_ids, load_data
from kdflow.data.leakage import held_keys, overlapping


def split(name, texts, pairs=None):
    inputs = {"text": list(texts)}
    if pairs is not None:
        inputs["text_pair"] = list(pairs)
    return Split(name, example_ids(name, inputs), inputs, np.zeros(len(texts), dtype=np.int64))


def test_equal_inputs_leak_and_a_different_pair_does_not():
    held = split("test", ["a cat sat", "a dog ran"], ["it sat", "it ran"])
    pool = {"text": ["a cat sat", "a cat sat", "a dog ran", "new"], "text_pair": ["it sat", "it ran", "it ran", "x"]}
    assert overlapping(pool, [held, None]).tolist() == [0, 2]  # position 1: same premise, other hypothesis
    assert overlapping(pool, [held], start=1).tolist() == [2]
    # single texts: equal text is the whole input
    assert overlapping({"text": ["b", "a", "c"]}, [split("v", ["a"]), split("t", ["c"])]).tolist() == [1, 2]
    assert len(held_keys([held, split("v", ["a cat sat"])])) == 3  # a text alone differs from a text with a pair


def test_the_transfer_set_drops_pairs_that_are_in_validation_or_test(tmp_path):
    def write(name, rows, label=True):
        path = tmp_path / name
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["premise", "hypothesis"] + (["label"] if label else []))
            w.writerows(rows)
        return str(path)
    train = write("train.csv", [[f"p{i}", f"h{i}", i % 2] for i in range(20)])
    test = write("test.csv", [["shared", "same", 0], ["other", "x", 1]])
    unl = write("unl.csv", [["shared", "same"], ["shared", "different"], ["fresh", "y"]], label=False)
    d = load_data(DataConfig(train=train, test=test, unlabelled=unl, text_column="premise",
                             text_pair_column="hypothesis"))
    assert list(zip(d.unlabelled.inputs["text"], d.unlabelled.inputs["text_pair"])) == [("shared", "different"),
                                                                                        ("fresh", "y")]
    assert any("dropped 1 texts that are in validation or test" in n for n in d.notes)


# ------------------------------------------------------------------ the rule at work: refuse, warn, or proceed knowingly

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

import kdflow  # noqa: E402
from kdflow.cli import main  # noqa: E402
from kdflow.data.leakage import LEAK_SHARE, overlaps  # noqa: E402

from conftest import make_intents, tiny_config, tree_hash  # noqa: E402


def tagged(n_per_class, seed, tag):
    return [[f"{text} {tag}{i}", label] for i, (text, label) in enumerate(make_intents(n_per_class, seed))]


def write_rows(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return str(path)


def leaked_files(tmp_path, copies: int, size: int = 200) -> dict:
    """A training file of 240 rows and a test file of ``size``: ``copies`` rows copied from the training file,
    the rest new. No validation file: kdflow holds 10 % of train out (some of the copies land there)."""
    train = tagged(60, 1, "tr")
    test = train[:copies] + tagged(size, 3, "te")[:size - copies]
    return {"train": write_rows(tmp_path / "train.csv", train), "test": write_rows(tmp_path / "test.csv", test)}


def leak_config(tmp_path, tiny_bert, data, name="leak", **data_keys):
    raw = tiny_config(tiny_bert, "", tmp_path / "runs", name, teach={"epochs": 1}, train={"epochs": 5})
    raw["data"] = {**data, "max_length": 32, **data_keys}
    raw["model"]["teacher"]["name"] = tiny_bert
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path), raw


def test_overlap_counts_the_training_file_as_given_exactly_and_normalised(tmp_path):
    data = leaked_files(tmp_path, 180)
    d = load_data(DataConfig(**data))
    o = overlaps(d)["test"]
    in_val = len(set(d.validation.inputs["text"]) & set(d.test.inputs["text"][:180]))
    assert o.count == 180 and o.size == 200 and o.exact == list(range(180)) and o.near == []
    assert o.sources == {"train": 180 - in_val, "the validation split held out of train": in_val} and in_val > 0
    assert o.too_many and o.share == 0.9 > LEAK_SHARE
    # the transfer set is training data too: a shouted copy of a test text (not dropped: not equal) counts
    test_texts = d.test.inputs["text"]
    unl = tmp_path / "unl.csv"
    with open(unl, "w", newline="") as fh:
        csv.writer(fh).writerows([["text"]] + [[t.upper() + "!"] for t in test_texts[180:190]] + [["fresh words"]])
    d = load_data(DataConfig(**data, unlabelled=str(unl)))
    o = overlaps(d)["test"]
    assert o.count == 190 and o.near == list(range(180, 190)) and o.sources["the transfer set (data.unlabelled)"] == 10
    # a validation file of its own is a held-out split, counted against train like test
    val = write_rows(tmp_path / "val.csv", tagged(60, 1, "tr")[:30] + tagged(10, 4, "va"))
    d = load_data(DataConfig(**data, validation=val))
    assert overlaps(d)["validation"].count == 30 and overlaps(d)["validation"].sources == {"train": 30}


@pytest.mark.parametrize("command", ["teach", "distill", "active", "frontier"])
def test_a_test_file_copied_from_train_is_refused_by_every_command_before_the_run_folder(tmp_path, tiny_bert,
                                                                                      command, capsys):
    path, _ = leak_config(tmp_path, tiny_bert, leaked_files(tmp_path, 180))
    assert main(["check", path, "--no-control"]) == 1
    out = capsys.readouterr().out
    assert "ERROR   leakage: 180 of 200 test examples (90.0%) are in the training data as given" in out
    run = tmp_path / "runs" / "leak"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("the user's own file")
    before = tree_hash(run, folders=True)
    assert main([command, path, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdflow: error: 180 of 200 test examples (90.0%) are in the training "
                                               "data as given (")
    assert f"remove them from file '{tmp_path / 'test.csv'}', data.test" in err[0]
    assert "data.allow_overlap: true" in err[0]
    assert tree_hash(run, folders=True) == before


def test_a_few_copies_are_a_warning_and_the_clean_part_is_scored_beside(tmp_path, tiny_bert, capsys):
    path, raw = leak_config(tmp_path, tiny_bert, leaked_files(tmp_path, 4))  # 2 %: under the 5 % refused
    assert main(["check", path, "--no-control"]) == 0
    assert "WARNING leakage: 4 of 200 test examples (2.0%)" in capsys.readouterr().out
    entry = kdflow.teach(raw)
    assert entry["overlap"]["test"] == {"examples": 200, "overlapping": 4, "share": 0.02, "exact": 4,
                                        "normalised": 0, "in": entry["overlap"]["test"]["in"],
                                        "clean_examples": 196}
    assert set(entry["test_clean"]) == set(entry["test"])


def test_allow_overlap_proceeds_and_records_the_overlap_beside_the_score_it_inflates(tmp_path, tiny_bert):
    data = leaked_files(tmp_path, 180)
    path, raw = leak_config(tmp_path, tiny_bert, data, allow_overlap=True)
    out = kdflow.check(path, control=False)
    assert out["counts"]["error"] == 0
    assert next(f for f in out["findings"] if f["check"] == "leakage")["level"] == "warning"
    entry = kdflow.teach(raw)
    assert entry["overlap"]["test"]["overlapping"] == 180 and entry["overlap"]["test"]["clean_examples"] == 20
    # the clean part's score is the model's score on exactly the 20 new rows, read as their own file
    clean = Path(write_rows(tmp_path / "clean.csv", tagged(200, 3, "te")[:20]))
    other = dict(raw, data={**raw["data"], "test": str(clean)})
    alone = kdflow.evaluate(str(tmp_path / "runs" / "leak"), other, role="teacher")
    assert alone["examples"] == 20 and entry["test_clean"] == {k: alone[k] for k in entry["test_clean"]}
    run = tmp_path / "runs" / "leak"
    saved = json.loads((run / "metrics.json").read_text())["teacher"]
    assert saved["test_clean"] == entry["test_clean"] and saved["overlap"] == entry["overlap"]
    log = (run / "log.txt").read_text()
    assert "[check] 180 of 200 test examples (90.0%) are in the training data as given" in log
    assert "on the other 20" in log
    report = (run / "report.md").read_text().splitlines()
    first = next(i for i, line in enumerate(report) if line.startswith("**Overlap (teacher, test)**"))
    assert first < next(i for i, line in enumerate(report) if line.startswith("## "))  # above everything else
    assert "180 of 200 test examples (90.0%) are in the training data" in report[first]
    shutil.rmtree(run)
