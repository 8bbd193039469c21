"""The one overlap rule, pair-aware, where training data meets held-out data (transfer set, pool)."""

import csv

import numpy as np

from kdflow.config import DataConfig
from kdflow.data import Split, example_ids, load_data
from kdflow.leakage import held_keys, overlapping


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
