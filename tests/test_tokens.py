"""Token tagging (``data.task: tokens``): readers into word targets, sub-token alignment, masking, per-word KD
against a hand computation, entity scores through the task kind, every command through ``main()``; and the
mean-pooling sentence head (``model.*.pooling: mean``)."""

import copy
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import kdflow
from kdflow.cli import main
from kdflow.config import load_config
from kdflow.data import load_data
from kdflow.data.features import WordsFeaturizer
from kdflow.distillation.losses import hinton_loss, kd_loss
from kdflow.errors import KdflowError
from kdflow.metrics import quality
from kdflow.models import load_hf_classifier, load_saved, load_tokenizer, save_model
from kdflow.models.tagger import WordTagger, words_from
from kdflow.tasks.tokens import NO_WORD

from conftest import tiny_config

CITIES = ["paris", "london", "new york", "san francisco", "tokyo", "berlin", "rome", "madrid", "oslo", "lima"]
DAYS = ["monday", "tuesday", "friday", "tomorrow", "next week", "sunday"]
FRAMES = ["book a flight to {c} on {d}", "what is the weather in {c}", "i want to fly to {c} {d}",
          "hotels in {c} for {d} please", "show me trains from {c} to {e}", "is {c} warm on {d}"]


def sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    words, tags = [], []
    for part in rng.choice(FRAMES).split():
        value, kind = {"{c}": (rng.choice(CITIES), "city"), "{e}": (rng.choice(CITIES), "city"),
                       "{d}": (rng.choice(DAYS), "date")}.get(part, (part, None))
        for i, w in enumerate(value.split()):
            words.append(w)
            tags.append("O" if kind is None else ("B-" if i == 0 else "I-") + kind)
    return words, tags


def conll(sentences) -> str:
    return "".join("\n".join(f"{w} {t}" for w, t in zip(*s)) + "\n\n" for s in sentences)


@pytest.fixture(scope="module")
def tag_cfg(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("tokens")
    rng, seen = random.Random(0), set()
    for name, n in (("train", 120), ("val", 30), ("test", 30)):
        rows = []
        while len(rows) < n:
            s = sentence(rng)
            if tuple(s[0]) not in seen:
                seen.add(tuple(s[0]))
                rows.append(s)
        (folder / f"{name}.conll").write_text(conll(rows))
    raw = tiny_config(tiny_bert, None, folder, "tags")
    raw["data"] = {"train": str(folder / "train.conll"), "validation": str(folder / "val.conll"),
                   "test": str(folder / "test.conll"), "task": "tokens", "max_length": 24}
    return folder, raw


def data_cfg(**data):
    return load_config({"data": {"task": "tokens", **data}}).data


# ------------------------------------------------------------------ readers

def test_conll_json_and_spans_read_into_word_targets(tmp_path):
    (tmp_path / "a.conll").write_text("-DOCSTART- O\n\nfly O\nto O\nnew B-city\nyork I-city\n\nhi O\n")
    d = load_data(data_cfg(train=str(tmp_path / "a.conll"), validation=str(tmp_path / "a.conll"), max_length=6,
                           allow_overlap=True))
    assert d.modality == "words" and d.label_names == ["O", "B-city", "I-city"]
    assert d.train.inputs["words"] == [["fly", "to", "new", "york"], ["hi"]]
    assert d.train.targets.tolist() == [[0, 0, 1, 2, NO_WORD, NO_WORD], [0] + [NO_WORD] * 5]
    assert d.train.labelled.tolist() == [0, 1]
    rows = [{"text": "two rooms at 7pm", "slots": {"rooms": {"text": "two", "span": [0, 3]},
                                                   "time": {"text": "7pm", "span": [13, 16]}}},
            {"tokens": ["no", "slot"], "tags": ["O", "O"]}]
    (tmp_path / "b.json").write_text(json.dumps(rows))
    j = load_data(data_cfg(train=str(tmp_path / "b.json"), validation=str(tmp_path / "b.json"), allow_overlap=True))
    assert j.label_names == ["O", "B-rooms", "I-rooms", "B-time", "I-time"]
    assert j.train.inputs["words"][0] == ["two", "rooms", "at", "7pm"] and j.train.targets[0, :4].tolist() == \
        [1, 0, 0, 3]
    # one sentence each for what cannot be read
    (tmp_path / "val.conll").write_text("fly O\nto O\nrome B-town\n")
    with pytest.raises(KdflowError, match="Tag 'B-town' \\(sentence 0 of the validation split\\) does not occur in "
                                          "train"):
        load_data(data_cfg(train=str(tmp_path / "a.conll"), validation=str(tmp_path / "val.conll")))
    (tmp_path / "long.conll").write_text("a O\nb O\nc O\nd O\ne O\n")
    with pytest.raises(KdflowError, match="Sentence 0 of the train split .* has 5 words, more than data.max_length 4"):
        load_data(data_cfg(train=str(tmp_path / "long.conll"), validation=str(tmp_path / "a.conll"), max_length=4))
    (tmp_path / "bio.conll").write_text("fly O\nrome E-city\n")
    with pytest.raises(KdflowError, match="tag 'E-city', which is not BIO"):
        load_data(data_cfg(train=str(tmp_path / "bio.conll"), validation=str(tmp_path / "a.conll")))
    with pytest.raises(Exception, match="reads tagged sentences .* drop data.path"):
        data_cfg(path=str(tmp_path / "a.conll"))
    # the transfer set: text split into words as slot spans are; every word's tag unknown, never scored
    (tmp_path / "more.csv").write_text('text\n"fly to oslo, please"\nhi\nbye\n')  # "hi" is in validation: dropped
    u = load_data(data_cfg(train=str(tmp_path / "a.conll"), validation=str(tmp_path / "a.conll"), max_length=6,
                           allow_overlap=True, unlabelled=str(tmp_path / "more.csv"))).unlabelled
    assert u.inputs["words"] == [["fly", "to", "oslo", ",", "please"], ["bye"]]
    assert u.targets.tolist() == [[-100] * 5 + [NO_WORD], [-100] + [NO_WORD] * 5] and len(u.labelled) == 0


def test_nlupp_slots_load_as_a_tagging_task(shared_data):
    from kdflow.data.tagging import read_tagged, tag_names
    folder = shared_data / "nlupp" / "hotels"
    # one fold (the dataset's low-data setup) lacks slot types that another holds: named, with the fix
    with pytest.raises(KdflowError, match="Tag 'B-time_period' .* does not occur in train; .* data.label_names"):
        load_data(data_cfg(train=str(folder / "fold0.json"), validation=str(folder / "fold1.json"), max_length=64))
    every = tag_names([t for k in range(20) for t in read_tagged(folder / f"fold{k}.json", "x", "auto", [])[1]])
    d = load_data(data_cfg(train=str(folder / "fold0.json"), validation=str(folder / "fold1.json"), max_length=64,
                           label_names=every))
    assert len(d.train) == len(json.loads((folder / "fold0.json").read_text())) and d.label_names == every
    assert every[0] == "O" and len(every) == 1 + 2 * 14 and "B-time_period" in every


# ------------------------------------------------------------------ alignment and masking

def test_words_align_to_sub_tokens_first_or_all(tiny_bert):
    from kdflow.data.splits import Split
    tok = load_tokenizer(tiny_bert)
    words = ["unbelievably", "good", "tokyo"]
    pieces = [tok.tokenize(w) for w in words]
    assert len(pieces[0]) > 1  # the case that matters: one word, several sub-tokens
    split = Split("train", ["a"], {"words": [words]}, np.zeros((1, 16), dtype=np.int64))
    first = WordsFeaturizer(tok, 16, "first").collate(WordsFeaturizer(tok, 16, "first").encode(split))
    every = WordsFeaturizer(tok, 16, "all").collate(WordsFeaturizer(tok, 16, "all").encode(split))
    n0 = len(pieces[0])
    # [CLS] w0 pieces... good tokyo [SEP]
    assert first["word_ids"][0].tolist()[: n0 + 4] == [-1, 0] + [-1] * (n0 - 1) + [1, 2, -1]
    assert every["word_ids"][0].tolist()[: n0 + 4] == [-1] + [0] * n0 + [1, 2, -1]
    assert first["word_mask"].tolist() == [[1, 1, 1] + [0] * 13]
    with pytest.raises(KdflowError, match="sub-tokens long, more than data.max_length 4; raise data.max_length"):
        WordsFeaturizer(tok, 4).encode(split)


def test_word_logits_by_hand_and_padding_changes_nothing(tiny_bert):
    logits = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    word_ids = torch.tensor([[-1, 0, 0, 1, -1], [-1, 0, -1, -1, -1]])
    out = words_from(logits, word_ids, torch.ones(2, 3, dtype=torch.long))
    assert out.shape == (2, 3, 2)
    assert out[0, 0].tolist() == ((logits[0, 1] + logits[0, 2]) / 2).tolist()
    assert out[0, 1].tolist() == logits[0, 3].tolist() and out[0, 2].tolist() == [0.0, 0.0]
    assert out[1, 0].tolist() == logits[1, 1].tolist() and out[1, 1:].abs().sum() == 0
    # a sentence's word logits alone and in a batch padded by a longer one
    from kdflow.data.splits import Split
    torch.manual_seed(0)
    model = load_hf_classifier(tiny_bert, ["O", "B-x", "I-x"], "tokens").eval()
    assert isinstance(model, WordTagger)
    feat = WordsFeaturizer(load_tokenizer(tiny_bert), 16)
    split = Split("t", ["a", "b"], {"words": [["fly", "to", "rome"], ["a", "much", "longer", "sentence", "here"]]},
                  np.zeros((2, 16), dtype=np.int64))
    rows = feat.encode(split)
    with torch.no_grad():
        alone = model(**feat.collate(rows[:1])).logits
        both = model(**feat.collate(rows)).logits
    assert alone.shape == (1, 16, 3)
    assert torch.allclose(alone[0, :3], both[0, :3], atol=1e-5)
    assert both[0, 3:].abs().sum() == 0 and both[1, 5:].abs().sum() == 0


def test_per_word_kd_and_cross_entropy_against_a_hand_computation():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    labels = torch.tensor([[0, 2, NO_WORD, NO_WORD], [1, -100, 0, NO_WORD]])
    words = labels != NO_WORD
    T, alpha = 2.0, 0.6
    got = hinton_loss(s, t, labels, T, alpha, "tokens")
    # by hand: KL per real word (5 words), CE per word with a known tag (4)
    p_t, log_s = F.softmax(t[words] / T, -1), F.log_softmax(s[words] / T, -1)
    kd = (p_t * (p_t.log() - log_s)).sum(-1).mean() * T * T
    known = labels[words] >= 0
    ce = F.cross_entropy(s[words][known], labels[words][known])
    assert torch.allclose(got["loss_kd"], kd, atol=1e-6) and torch.allclose(got["loss_hard"], ce, atol=1e-6)
    assert torch.allclose(got["loss"], alpha * kd + (1 - alpha) * ce, atol=1e-6)
    assert torch.allclose(kd, kd_loss(s[words], t[words], T), atol=1e-6)
    # padding positions hold anything: nothing changes
    s2, t2 = s.clone(), t.clone()
    s2[~words], t2[~words] = 1e4, -1e4
    again = hinton_loss(s2, t2, labels, T, alpha, "tokens")
    assert all(torch.equal(got[k], again[k]) for k in got)


def test_entity_scores_through_the_task_kind():
    names = ["O", "B-city", "I-city"]
    targets = np.array([[1, 2, 0, NO_WORD], [0, 1, NO_WORD, NO_WORD]])
    logits = np.zeros((2, 4, 3))
    for (i, j), tag in np.ndenumerate(np.array([[1, 2, 0, 0], [1, 0, 0, 0]])):
        logits[i, j, tag] = 1.0  # "new york" right; sentence 2 tags the O word as a city and misses the real one
    got = quality(logits, targets, "tokens", names=names)
    assert got["span_precision"] == 0.5 and got["span_recall"] == 0.5 and got["span_f1"] == 0.5
    assert got["token_accuracy"] == pytest.approx(3 / 5)


# ------------------------------------------------------------------ the commands

def test_every_command_tags_through_main(tag_cfg, capsys):
    folder, raw = tag_cfg
    path = folder / "tags.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["teach", str(path), "--quiet"]) == 0
    teacher = json.loads((folder / "tags" / "metrics.json").read_text())["teacher"]
    assert set(teacher["test"]) == {"span_f1", "span_precision", "span_recall", "token_accuracy"}
    assert teacher["test"]["span_f1"] > 0.5  # the synthetic slots are easy; a learnt teacher finds them
    # the saved teacher is a plain token classifier: transformers loads it without kdflow
    from transformers import AutoModelForTokenClassification
    plain = AutoModelForTokenClassification.from_pretrained(folder / "tags" / "teacher")
    assert plain.config.id2label[1] == "B-city"
    assert main(["evaluate", str(folder / "tags" / "teacher"), "--config", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in teacher["test"]} == teacher["test"]
    raw2 = {**raw, "model": {**raw["model"], "teacher": {"name": str(folder / "tags" / "teacher")}},
            "distill": {"alpha": 0.7, "temperature": 2.0}}
    path.write_text(yaml.safe_dump(raw2))
    assert main(["distill", str(path), "--quiet"]) == 0
    student = json.loads((folder / "tags" / "metrics.json").read_text())["student"]
    assert "loss_kd" in (folder / "tags" / "metrics.csv").read_text()
    assert student["teacher_test"] == pytest.approx(teacher["test"])
    # export: ONNX reads words too and returns one row per word; it is scored beside the student
    assert main(["export", str(folder / "tags"), "--onnx", "--no-memory", "--latency-examples", "4",
                 "--repeats", "1"]) == 0
    rows = {r["model"]: r for r in json.loads((folder / "tags" / "metrics.json").read_text())["deploy"]}
    assert {"teacher", "student", "student-onnx"} <= set(rows)
    assert rows["student"]["span_f1"] == pytest.approx(student["test"]["span_f1"])
    assert rows["student-onnx"]["span_f1"] == pytest.approx(student["test"]["span_f1"], abs=0.02)
    import onnx
    graph = onnx.load(str(folder / "tags" / "export" / "student.onnx")).graph
    assert {i.name for i in graph.input} >= {"input_ids", "attention_mask", "word_ids", "word_mask"}
    capsys.readouterr()
    assert main(["check", str(path)]) == 0
    said = capsys.readouterr().out
    assert "majority baseline: validation span_f1 0.0000" in said and "linear model on 120 training examples" in said
    assert main(["compare", "--config", str(path), str(folder / "tags" / "teacher"), str(folder / "tags" / "student"),
                 "--no-memory", "--latency-examples", "4", "--repeats", "1"]) == 0
    shown = capsys.readouterr().out  # retention: the student's test span F1 over the teacher's
    assert "retention" in shown and f"{student['test']['span_f1'] / teacher['test']['span_f1']:.1%}" in shown
    # layers: each teacher block scored by the span F1 lost without it (no class per example to probe for)
    assert main(["layers", str(path)]) == 0
    scores = json.loads((folder / "tags" / "layers" / "layers.json").read_text())
    assert scores["metric"] == "span_f1" and scores["probe"] is None and len(scores["drop"]) == 2
    assert scores["base_accuracy"] == pytest.approx(teacher["validation"]["span_f1"])
    assert main(["layers", str(path), "--method", "probe"]) == 2
    assert "probe fits a classifier to one class per example, and tokens" in capsys.readouterr().err
    assert main(["report", str(folder / "tags")]) == 0
    assert "| student-onnx |" in (folder / "tags" / "report.md").read_text()
    assert (folder / "tags" / "plots" / "curves.png").is_file()


def base_teacher(tag_cfg) -> str:
    """A teacher trained once for the tests below (whichever runs first trains it)."""
    folder, raw = tag_cfg
    if not (folder / "base" / "teacher").is_dir():
        kdflow.teach({**raw, "run": {**raw["run"], "name": "base"}})
    return str(folder / "base" / "teacher")


@pytest.mark.parametrize("name,extra", [
    ("transfer-set", {"data": {"unlabelled": "unlabelled.csv"}, "distill": {"alpha": 0.9}}),
    ("online-layers", {"distill": {"mode": "online", "intermediate": True, "layers": "last:1"}}),
    ("guide", {"distill": {"mode": "guide", "guide_every": 1}}),
    ("all-subwords", {"data": {"subwords": "all"}}),
    ("critical-layers", {"distill": {"intermediate": True, "layers": "auto:1"}}),
])
def test_other_modes_distil_tags(tag_cfg, name, extra):
    folder, raw = tag_cfg
    cfg = copy.deepcopy({**raw, "model": {**raw["model"], "teacher": {"name": base_teacher(tag_cfg)}},
                         "run": {**raw["run"], "name": name}})
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    if "unlabelled" in cfg["data"]:  # sentences of the same frames, untagged
        rng = random.Random(7)
        (folder / "unlabelled.csv").write_text("text\n" + "".join(" ".join(sentence(rng)[0]) + "\n"
                                                                  for _ in range(40)))
        cfg["data"]["unlabelled"] = str(folder / "unlabelled.csv")
    entry = kdflow.distill(cfg)
    if "unlabelled" in cfg["data"]:
        log = (folder / name / "log.txt").read_text()
        assert "student trains on 120 labelled + " in log and "unlabelled examples" in log
    assert 0.0 <= entry["test"]["span_f1"] <= 1.0 and entry["distill"]["mode"] == cfg.get("distill", {}).get(
        "mode", "offline")


def test_what_does_not_apply_to_tagging_is_refused_in_one_sentence(tag_cfg):
    folder, raw = tag_cfg
    raw = {**raw, "model": {**raw["model"], "teacher": {"name": base_teacher(tag_cfg)}}}
    cases = [({"active": {"initial": 8}}, "active", "active.strategy entropy is not meant for data.task tokens; use "
                                                     "one of random, mean_token_margin"),
             ({"active": {"initial": 8, "strategy": "mnlp", "oracle": "hybrid"}}, "active",
              "oracle hybrid splits a batch by the teacher's confidence"),
             ({"model": {**raw["model"], "student": {"kind": "encoder", "num_layers": 1, "hidden_size": 16,
                                                     "num_heads": 2}}}, "distill",
              "runs Hugging Face token classifiers, and model.student is of kind encoder"),
             ({"model": {**raw["model"], "teacher": {**raw["model"]["teacher"], "pooling": "mean"}}}, "teach",
              "pooling makes one output per sentence"),
             ({"distill": {"intermediate": True, "layers": "auto:1", "layer_score": "probe"}}, "distill",
              "probe fits a classifier to one class per example")]
    for extra, command, message in cases:
        with pytest.raises(KdflowError, match=message):
            getattr(kdflow, command)({**raw, **extra, "run": {**raw["run"], "name": f"refused-{command}"}})
    from transformers import BertConfig, BertForTokenClassification

    from kdflow.integrations.hf_trainer import _task
    tagger = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=16, num_labels=3))
    with pytest.raises(KdflowError, match="is a token classifier, and KDTrainer distils one output per example"):
        _task(tagger, "student")


# ------------------------------------------------------------------ active learning on sentences

def test_token_strategies_score_sentences_by_hand():
    from kdflow.active.strategies import PoolOutputs, mean_token_margin, min_token_margin, mnlp, select
    nan = [np.nan, np.nan]
    probs = np.array([[[0.9, 0.1], [0.6, 0.4], nan],           # gaps 0.8, 0.2
                      [[0.5, 0.5], nan, nan],                    # gap 0: one unsure word
                      [[0.99, 0.01], [0.99, 0.01], [0.7, 0.3]]])  # gaps 0.98, 0.98, 0.4
    assert np.allclose(mean_token_margin(probs), [-0.5, 0.0, -(0.98 + 0.98 + 0.4) / 3])
    assert np.allclose(min_token_margin(probs), [-0.2, 0.0, -0.4])
    assert np.allclose(mnlp(probs), [-(np.log(0.9) + np.log(0.6)) / 2, -np.log(0.5),
                                     -(2 * np.log(0.99) + np.log(0.7)) / 3])
    # padding is not a word: the same sentence padded wider scores the same
    wider = np.concatenate([probs, np.full((3, 2, 2), np.nan)], 1)
    assert np.allclose(mnlp(wider), mnlp(probs)) and np.allclose(min_token_margin(wider), min_token_margin(probs))
    order = select("min_token_margin", PoolOutputs(n=3, probs=probs), 3, np.arange(3), np.array([], dtype=int))
    assert order.tolist() == [1, 0, 2]


def test_active_learning_on_sentences(tag_cfg):
    """Gold, teacher and human oracles buy tag sequences; the human round trip writes the teacher's pre-tags and
    reads corrected tags back (checked whole)."""
    folder, raw = tag_cfg
    base = {**raw, "model": {**raw["model"], "teacher": {"name": base_teacher(tag_cfg)}}, "distill": {"alpha": 0.5}}
    data = load_data(load_config({"data": raw["data"]}).data)
    words = dict(zip(data.train.ids, data.train.inputs["words"]))
    truth = {k: [data.label_names[j] for j in t if j >= 0] for k, t in zip(data.train.ids, data.train.targets)}

    def run(name, **active):
        cfg = {**base, "run": {**raw["run"], "name": name},
               "active": {"initial": 16, "per_round": 16, "rounds": 2, "min_steps": 10, **active}}
        return kdflow.active(cfg), json.loads((folder / name / "active" / "state.json").read_text())
    out, state = run("al-gold", strategy="mnlp")
    assert [r["labels"] for r in out["rounds"]] == [16, 32] and out["batches"][0]["strategy"] == "initial (random)"
    assert out["batches"][1]["strategy"] == "mnlp" and "span_f1" in out["rounds"][-1]["validation"]
    assert all(v["label"] == truth[k] and v["source"] == "gold" for k, v in state["labels"].items())
    _, state = run("al-teacher-oracle", strategy="min_token_margin", oracle="teacher")
    assert all(len(v["label"]) == len(words[k]) and v["source"] == "teacher" for k, v in state["labels"].items())
    # human: the request pre-tags each sentence; a corrected file goes on; a wrong one is refused whole
    cfg = {**base, "run": {**raw["run"], "name": "al-human"},
           "active": {"initial": 4, "per_round": 4, "rounds": 1, "min_steps": 5, "oracle": "human",
                      "strategy": "mean_token_margin"}}
    kdflow.active(cfg)
    request = folder / "al-human" / "active" / "batch-000" / "to_label.jsonl"
    asked = [json.loads(x) for x in request.read_text().splitlines()]
    assert len(asked) == 4 and all(r["tokens"] == words[r["id"]] and len(r["tags"]) == len(r["tokens"])
                                   for r in asked)
    assert (request.parent / "to_label.conll").read_text().startswith(f"# id = {asked[0]['id']}\n")
    bad = [dict(r, tags=r["tags"][:-1]) if i == 2 else r for i, r in enumerate(asked)]
    (folder / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    n = len(asked[2]["tokens"])
    with pytest.raises(KdflowError, match=f"Line 3 of .* has {n - 1} tags for {n} words; give one tag per word"):
        kdflow.active(cfg, resume=True, labels=str(folder / "bad.jsonl"))
    fixed = [dict(r, tags=truth[r["id"]]) for r in asked]
    fixed[0]["tags"] = "__skip__"
    (folder / "fixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fixed))
    kdflow.active(cfg, resume=True, labels=str(folder / "fixed.jsonl"))
    state = json.loads((folder / "al-human" / "active" / "state.json").read_text())
    assert {k: v["label"] for k, v in state["labels"].items() if v["source"] == "human"} == \
        {r["id"]: truth[r["id"]] for r in asked[1:]}


# ------------------------------------------------------------------ mean pooling (sentence tasks)

def test_mean_pooling_reads_the_mean_of_the_last_states_and_reloads(tiny_bert, tmp_path):
    torch.manual_seed(0)
    model = load_hf_classifier(tiny_bert, ["a", "b", "c"], "classification", pooling="mean").eval()
    tok = load_tokenizer(tiny_bert)
    batch = tok(["fly to rome", "a longer sentence than that one"], padding=True, return_tensors="pt")
    with torch.no_grad():
        got = model(**batch).logits
        hidden = model.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        by_hand = model.classifier((hidden * mask).sum(1) / mask.sum(1))
    assert torch.allclose(got, by_hand, atol=1e-6)
    # padding changes nothing; a deep copy pools its own inputs; the saved model reloads with mean pooling
    with torch.no_grad():
        alone = model(**tok(["fly to rome"], return_tensors="pt")).logits
        twin = copy.deepcopy(model)(**batch).logits
    assert torch.allclose(alone[0], got[0], atol=1e-5) and torch.equal(twin, got)
    save_model(model, tmp_path / "m", tok, ["a", "b", "c"], "classification")
    back = load_saved(tmp_path / "m")[0].eval()
    with torch.no_grad():
        assert torch.equal(back(**batch).logits, got)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["kdflow_pooling"] == "mean"
