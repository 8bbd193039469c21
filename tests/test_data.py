"""Every loader on real files (../shared/data) and on tiny self-made ones."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kdflow import DataConfig, KdflowError
from kdflow.data import TextFeaturizer, ValuesFeaturizer, example_ids, load_data, make_collate, stratified_split


def cfg(**kw):
    return DataConfig(**kw)


def test_clinc_layout_real_full(shared_data):
    d = load_data(cfg(path=str(shared_data / "clinc150" / "data_full.json")))
    assert (len(d.train), len(d.validation), len(d.test)) == (15000, 3000, 4500)
    assert d.num_labels == 150 and "oos" not in d.label_names
    assert d.train.ids[0].startswith("train:") and len(set(d.train.ids)) == 15000
    # the same label map indexes every split
    assert d.validation.targets.max() == 149 and np.bincount(d.test.targets).tolist() == [30] * 150
    with_oos = load_data(cfg(path=str(shared_data / "clinc150" / "data_full.json"), include_out_of_scope=True))
    assert with_oos.num_labels == 151 and len(with_oos.test) == 5500


def test_agnews_headerless_tsv_and_string_labels(shared_data):
    d = load_data(cfg(train=str(shared_data / "agnews" / "train.tsv"), test=str(shared_data / "agnews" / "test.tsv"),
                      header=False, columns=["text", "label"]))
    assert d.label_names == ["Business", "Sci/Tech", "Sports", "World"]
    assert len(d.test) == 7600
    # no validation file: a seeded stratified 10% of train is held out
    rows = sum(1 for _ in open(shared_data / "agnews" / "train.tsv", encoding="utf-8"))
    assert len(d.train) + len(d.validation) == rows and len(d.validation) == pytest.approx(rows / 10, abs=4)
    assert any("held out a stratified 10%" in n for n in d.notes)
    assert not set(d.train.ids) & {i.replace("validation:", "train:") for i in d.validation.ids}
    tr = np.bincount(d.train.targets) / len(d.train)
    va = np.bincount(d.validation.targets) / len(d.validation)
    assert np.abs(tr - va).max() < 0.01


def test_sst2_tsv_with_header_and_int_labels(shared_data):
    d = load_data(cfg(train=str(shared_data / "sst2" / "train.tsv"), validation=str(shared_data / "sst2" / "validation.tsv"),
                      test=str(shared_data / "sst2" / "test.tsv"), text_column="sentence"))
    assert d.label_names == ["0", "1"] and len(d.test) == 872 and len(d.validation) == 6735
    assert not d.notes


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_local_tables_with_column_mapping(tmp_path, fmt):
    df = pd.DataFrame({"q": ["a cat", "a dog", "the cat", "the dog", "my cat", "my dog"] * 2,
                       "p": ["x", "y"] * 6, "y": ["pet-c", "pet-d"] * 6})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "json":
        path.write_text(json.dumps(df.to_dict(orient="records")))
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    d = load_data(cfg(train=str(path), text_column="q", text_pair_column="p", label_column="y"))
    assert d.label_names == ["pet-c", "pet-d"]
    assert len(d.train) + len(d.validation) == 12
    assert set(d.train.inputs) == {"text", "text_pair"}
    for split in (d.train, d.validation):
        for text, pair, y in zip(split.inputs["text"], split.inputs["text_pair"], split.targets):
            assert d.label_names[y] == ("pet-c" if "cat" in text else "pet-d")
            assert pair == ("x" if "cat" in text else "y")


def test_regression_targets(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame({"text": [f"s{i}" for i in range(20)], "label": [i / 4 for i in range(20)]}).to_csv(path, index=False)
    d = load_data(cfg(train=str(path), task="regression"))
    assert d.label_names is None and d.num_labels == 1 and d.train.targets.dtype == np.float32
    assert sorted(np.concatenate([d.train.targets, d.validation.targets]).tolist()) == [i / 4 for i in range(20)]
    bad = tmp_path / "b.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["1.0", "high"]}).to_csv(bad, index=False)
    with pytest.raises(KdflowError, match="'high' in the train split is not a number"):
        load_data(cfg(train=str(bad), task="regression"))


def test_bad_input_is_one_sentence(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}).to_csv(path, index=False)
    cases = [
        (cfg(train=str(tmp_path / "missing.csv")), "does not exist"),
        (cfg(train=str(path), label_column="intent"), "Column 'intent' is not in"),
        (cfg(train=str(path), text_column="sentence"), "columns: text, label"),
        (cfg(train=str(tmp_path / "x.xyz")), "does not exist"),
        (cfg(path=str(path)), "supports the CLINC150 layout"),
    ]
    (tmp_path / "x.xyz").write_text("a")
    cases[3] = (cfg(train=str(tmp_path / "x.xyz")), "Cannot tell the format")
    other = tmp_path / "v.csv"
    pd.DataFrame({"text": ["e"], "label": [7]}).to_csv(other, index=False)
    cases.append((cfg(train=str(path), validation=str(other)), "Label '7' (row 0 of the validation split)"))
    one = tmp_path / "one.csv"
    pd.DataFrame({"text": ["a", "b"], "label": [1, 1]}).to_csv(one, index=False)
    cases.append((cfg(train=str(one)), "needs at least 2"))
    notclinc = tmp_path / "n.json"
    notclinc.write_text(json.dumps({"rows": [1, 2]}))
    cases.append((cfg(path=str(notclinc)), "not in the CLINC150 layout"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"train": [["a", "x"],')
    cases.append((cfg(path=str(broken)), "is not valid JSON"))
    for c, expected in cases:
        with pytest.raises(KdflowError) as info:
            load_data(c)
        assert expected in str(info.value) and "\n" not in str(info.value)


def test_missing_cells_and_json_shapes(tmp_path):
    rows = tmp_path / "r.jsonl"
    rows.write_text('{"text": "a", "label": "001"}\n{"text": "b", "label": "002"}\n{"text": "c", "label": "001"}\n'
                    '{"text": "d", "label": "002"}\n')
    assert load_data(cfg(train=str(rows))).label_names == ["001", "002"]  # not turned into 1 and 2
    cols = tmp_path / "c.json"
    cols.write_text(json.dumps({"text": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"]}))
    d = load_data(cfg(train=str(cols)))  # a dict of columns is a table
    assert len(d.train) + len(d.validation) == 4 and len(d.validation) == 1
    gap = tmp_path / "g.csv"
    gap.write_text("text,label\na,x\nb,\nc,y\n")
    with pytest.raises(KdflowError, match="Row 1 of .* has no value in column 'label'"):
        load_data(cfg(train=str(gap)))
    null = tmp_path / "n.jsonl"
    null.write_text('{"text": "a", "label": "x"}\n{"text": null, "label": "y"}\n')
    with pytest.raises(KdflowError, match="no value in column 'text'"):
        load_data(cfg(train=str(null)))
    three = tmp_path / "t.tsv"
    three.write_text("id1\tsome text\tx\nid2\tother text\ty\n")
    with pytest.raises(KdflowError, match="has 3 fields per row but data.columns names 2"):
        load_data(cfg(train=str(three), header=False, columns=["text", "label"]))


def test_ids_are_stable_and_unique():
    a = example_ids("train", {"text": ["x", "y", "x"]})
    b = example_ids("train", {"text": ["y", "x", "x"]})
    assert a[0] == b[1] and a[1] == b[0] and len(set(a)) == 3 and a[2].endswith("#1")
    assert example_ids("train", {"text": ["x"], "text_pair": ["p"]}) != example_ids("train", {"text": ["x"]})


def test_stratified_split_is_seeded_and_keeps_every_class():
    y = np.repeat(np.arange(5), [50, 20, 10, 5, 2])
    k1, h1 = stratified_split(y, 0.2, 7, True)
    k2, h2 = stratified_split(y, 0.2, 7, True)
    assert (h1 == h2).all() and len(np.intersect1d(k1, h1)) == 0 and len(k1) + len(h1) == len(y)
    assert set(y[k1]) == set(range(5))  # every class keeps training examples
    # exactly round(0.2 * 87) = 17 held out, by largest remainders of 9.77, 3.9, 1.95, 0.98, 0.39
    assert len(h1) == 17 and np.bincount(y[h1], minlength=5).tolist() == [10, 4, 2, 1, 0]
    assert stratified_split(y, 0.2, 8, True)[1].tolist() != h1.tolist()  # the seed matters
    # singletons stay in train
    k, h = stratified_split(np.array([0, 0, 0, 0, 1]), 0.5, 0, True)
    assert 4 in k and len(h) == 2


def test_max_train_examples_subsamples_stratified(intents_json):
    d = load_data(cfg(path=intents_json, max_train_examples=80))
    assert len(d.train) == 80 and np.bincount(d.train.targets).tolist() == [20] * 4


def test_featurizer_pads_per_batch_and_pairs(tiny_bert):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    from kdflow.data import Split
    split = Split("train", ["a", "b"], {"text": ["hi", "a much longer sentence here"], "text_pair": ["x", "y"]},
                  np.array([0, 1]))
    feat = TextFeaturizer(tok, max_length=6)
    batch = make_collate(split, feat)([0, 1])
    assert batch["inputs"]["input_ids"].shape == (2, 6)  # truncated to max_length
    assert batch["inputs"]["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 0]  # [CLS] hi [SEP] x [SEP] + pad
    assert batch["inputs"]["token_type_ids"][0].tolist()[:5] == [0, 0, 0, 1, 1]
    assert batch["teacher_inputs"] is batch["inputs"] and batch["labels"].tolist() == [0, 1]
    values = Split("train", ["a", "b"], {"values": [[1.0, 2.0, 3.0], [4.0]]}, np.array([0, 1]))
    vb = make_collate(values, ValuesFeaturizer(max_length=8))([0, 1])["inputs"]
    assert vb["values"].shape == (2, 3, 1) and vb["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_hub_loader_on_a_local_dataset_folder(tmp_path):
    # the hub path (datasets.load_dataset) without network: a local folder of split files
    folder = tmp_path / "myset"
    folder.mkdir()
    for split, n in (("train", 12), ("validation", 4), ("test", 4)):
        pd.DataFrame({"sentence": [f"{split} text {i}" for i in range(n)],
                      "label": [i % 2 for i in range(n)]}).to_csv(folder / f"{split}.csv", index=False)
    d = load_data(cfg(hub=str(folder)))
    assert (len(d.train), len(d.validation), len(d.test)) == (12, 4, 4)
    assert d.label_names == ["0", "1"] and d.train.inputs["text"][0].startswith("train text")
    assert any("text 'sentence'" in n for n in d.notes)


def test_hub_name_readings():
    from kdflow.data.hub import hub_attempts as _hub_attempts
    assert _hub_attempts("glue/sst2", None) == [("glue", "sst2"), ("glue/sst2", None)]
    assert _hub_attempts("ag_news", None) == [("ag_news", None)]
    assert _hub_attempts("SetFit/sst2", "default") == [("SetFit/sst2", "default")]


def test_featurizers_encode_once_per_id_and_only_training_batches_are_told_to_augment():
    """The protocol's split: encode is cached by example id (deterministic); collate sees ``train``,
    where an augmenting modality would draw its random transforms."""
    from kdflow.data import Split, ValuesFeaturizer, input_batches, train_loader

    class Noisy(ValuesFeaturizer):  # a stand-in for an augmenting modality
        augments = True
        encoded, seen = 0, []

        def _encode(self, split, positions):
            Noisy.encoded += len(positions)
            return super()._encode(split, positions)

        def collate(self, rows, train=False, seed=None):  # an augmenting featurizer draws from the batch's seed
            Noisy.seen.append(train)
            batch = super().collate(rows, train)
            if train:
                batch["values"] = batch["values"] + torch.randn_like(batch["values"])
            return batch

    split = Split("train", ["a", "b", "c"], {"values": [[1.0, 2.0], [3.0], [4.0, 5.0]]}, np.array([0, 1, 0]))
    feat = Noisy(max_length=8)
    first = [b["inputs"]["values"] for b in train_loader(split, feat, None, 3, seed=0)]
    again = [b["inputs"]["values"] for b in train_loader(split, feat, None, 3, seed=0)]
    plain = input_batches(split, feat, 3)
    assert Noisy.encoded == 3  # three examples, encoded once for all three loaders
    assert Noisy.seen == [True, True, False]
    assert not torch.equal(first[0], again[0])  # a fresh augmentation per pass, never a cached one
    assert plain[0]["values"].tolist() == [[[1.0], [2.0]], [[3.0], [0.0]], [[4.0], [5.0]]]


def test_files_in_other_encodings_binary_or_empty(tmp_path):
    rows = "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(10))
    cases = {"latin.csv": (("text,label\n" + rows + "caf\xe9,a\n").encode("latin-1"), "not UTF-8 text (byte 0xe9 "
                                                                                      "on line 12"),
             "bin.csv": (b"\x00\x01\x02" * 30, "is not a text file"), "empty.csv": (b"", "is empty"),
             "blank.jsonl": (b"\n \n", "is empty"), "head.csv": (b"text,label\n", "holds no rows"),
             "cut.jsonl": (b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "lab\n',
                           "Line 3 of data.train file"),
             "list.jsonl": (b'{"text": "a", "label": "x"}\n[1]\n', "Line 2 of data.train file"),
             "scalar.json": (b"5", "holds a number")}
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(KdflowError) as info:
            load_data(cfg(train=str(tmp_path / name)))
        assert expected in str(info.value) and name in str(info.value) and "\n" not in str(info.value), name
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "t.csv").write_text("text,label\n" + rows)
    with pytest.raises(KdflowError, match="is an empty folder, not a file"):
        load_data(cfg(train=str(tmp_path / "t.csv"), format="csv", validation=str(tmp_path / "folder.csv")))
    (tmp_path / "folder.csv" / "part-0.csv").write_text("text,label\n")
    with pytest.raises(KdflowError, match="is a folder, not a file"):
        load_data(cfg(train=str(tmp_path / "t.csv"), format="csv", validation=str(tmp_path / "folder.csv")))
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes(("text,label\n" + rows).encode("utf-16"))  # with its byte-order mark: read as UTF-16
    d = load_data(cfg(train=str(utf16)))
    assert sorted(d.train.inputs["text"] + d.validation.inputs["text"]) == sorted(f"text {i}" for i in range(10))


def test_non_finite_regression_targets_and_values_name_file_column_and_row(tmp_path):
    for bad in ("inf", "-Infinity", "1e39", "1e999"):
        path = tmp_path / "r.csv"
        path.write_text("text,score\n" + "".join(f"t{i},{bad if i == 3 else i / 2}\n" for i in range(8)))
        with pytest.raises(KdflowError) as info:
            load_data(cfg(train=str(path), task="regression", label_column="score"))
        msg = str(info.value)
        assert f"{bad!r} in row 3 of the train split (file '{path}', data.train, column 'score')" in msg, msg
    seq = tmp_path / "s.jsonl"
    seq.write_text("".join(json.dumps({"values": [1.0, 2.0] if i != 2 else [1.0, 1e39], "label": "ab"[i % 2]})
                           + "\n" for i in range(6)))
    with pytest.raises(KdflowError, match="Row 2 of column 'values' .* beyond float32's range"):
        load_data(cfg(train=str(seq), values_column="values"))
