"""The remote LLM teacher (``kind: llm`` with ``base_url``) against a scripted OpenAI-compatible server on
loopback (:mod:`fake_openai`): label scores from log-probabilities or samples, retries on 429 / 5xx /
timeouts / broken bodies, unusable answers counted and dropped, the call budget, a server killed mid-run and
a resume that pays for nothing twice, and a key that never reaches the disk."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import kdflow
from kdflow.cli import main
from kdflow.config import LLMSpec
from kdflow.data.features import RawTextFeaturizer
from kdflow.data.splits import Split
from kdflow.errors import KdflowError
from kdflow.models import KINDS, BuildContext
from kdflow.models.remote import label_of, scores_from_logprobs

from conftest import tiny_config
from fake_openai import LABELS, FakeEndpoint, answer_of

TEXTS = ["what is the weather", "book a flight", "play music", "my balance please", "weather in rome",
         "flight to oslo", "music by adele", "balance of checking"]


@pytest.fixture
def endpoint():
    made = []

    def start(**kwargs):
        made.append(FakeEndpoint(**kwargs))
        return made[-1]
    yield start
    for e in made:
        try:
            e.stop()
        except OSError:
            pass


def teacher(url, cache, **settings):
    spec = LLMSpec(name="fake-model", base_url=url, **{"retry_wait": 0.01, "timeout": 5.0, **settings})
    return KINDS["llm"].teacher(spec, BuildContext(LABELS, "classification", 32, cache_dir=cache))


def ask(t, texts=TEXTS):
    split = Split("train", [f"train:{i}" for i in range(len(texts))], {"text": list(texts)},
                  np.zeros(len(texts), dtype=np.int64))
    feat = RawTextFeaturizer()
    return t(**feat.collate(feat.encode(split))).logits


def test_answers_are_read_as_labels_and_log_probabilities_as_label_scores():
    assert label_of(" Weather.", LABELS) == 3 and label_of("music, I think", LABELS) == 2
    assert label_of("It is about money", LABELS) is None and label_of("", LABELS) is None
    mass = scores_from_logprobs([(" Weather", -0.2), ("The", -2.5), ("bal", -4.0), ("m", -5.0)], LABELS)
    assert mass == pytest.approx([math.exp(-4), 0, math.exp(-5), math.exp(-0.2)])
    shared = scores_from_logprobs([("Sp", math.log(0.5))], ["Sports", "Spam", "x"])  # starts two labels: halved
    assert shared == pytest.approx([0.25, 0.25, 0.0])
    assert scores_from_logprobs([("Hello", -0.1)], LABELS) is None


def test_remote_scores_from_logprobs_cached_as_they_arrive_and_a_rerun_sends_nothing(endpoint, tmp_path):
    e = endpoint()
    t = teacher(e.url, tmp_path, concurrency=3, price_prompt=2.0, price_completion=10.0)
    probs = ask(t).exp()
    want = {"weather": 3, "flight": 1, "music": 2, "balance": 0}
    for row, text in zip(probs, TEXTS):
        label = next(c for word, c in want.items() if word in text)
        expect = [math.exp(-4.0)] * 4
        expect[label] = math.exp(-0.2)
        torch.testing.assert_close(row, torch.tensor(expect), atol=1e-6, rtol=0)
    usage = t.usage()
    assert usage["calls"] == len(e.requests) == 8 and usage["retries"] == 0 and usage["cached"] == 0
    assert usage["prompt_tokens"] == 8 * 30 and usage["money"] == pytest.approx((8 * 30 * 2.0 + 8 * 10.0) / 1e6)
    lines = next(tmp_path.glob("remote-*")).joinpath("answers.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(x)["via"] == "logprobs" for x in lines)
    again = teacher(e.url, tmp_path, concurrency=3)
    torch.testing.assert_close(ask(again).exp(), probs)
    assert again.usage()["calls"] == 0 and again.usage()["cached"] == 8 and len(e.requests) == 8


def test_429_5xx_timeouts_and_broken_bodies_are_retried_with_back_off(endpoint, tmp_path):
    e = endpoint(script=["429", "500", "malformed", "slow"], slow_s=1.0)
    t = teacher(e.url, tmp_path, concurrency=1, max_retries=4, timeout=0.3)
    ask(t, TEXTS[:1])
    assert [a for a, _ in e.requests] == ["429", "500", "malformed", "slow", "ok"]
    assert t.usage()["calls"] == 1 and t.usage()["retries"] == 4
    failing = endpoint(default="500")
    with pytest.raises(KdflowError, match=r"The endpoint .* failed \(InternalServerError: .*\) after 3 tries; 0 "
                                          r"answers are cached, so a rerun asks only the rest"):
        ask(teacher(failing.url, tmp_path, max_retries=2), TEXTS[:2])


def test_without_logprobs_answers_are_sampled_and_unusable_ones_counted_then_dropped(endpoint, tmp_path):
    e = endpoint(default="nologprobs")
    t = teacher(e.url, tmp_path / "a", concurrency=1, samples=3)
    probs = ask(t, TEXTS[:3]).exp()
    assert probs.argmax(1).tolist() == [3, 1, 2] and probs.max(1).values.tolist() == [1.0, 1.0, 1.0]
    # the first request learnt that this endpoint gives no log-probabilities: then one sampled request each
    assert t.usage()["calls"] == 4 and [a for a, _ in e.requests] == ["nologprobs"] * 4
    for action, kind in (("empty", "empty"), ("refuse", "refusal"), ("chatter", "truncated")):
        bad = endpoint(default=action)
        t = teacher(bad.url, tmp_path / action, concurrency=1, samples=2, max_retries=2)
        logits = ask(t, TEXTS[:1])
        assert torch.isnan(logits).all()  # dropped: no class is made up for it
        usage = t.usage()
        assert usage["dropped"] == 1 and usage["unusable"][kind] == 3 * 2  # 1 + 2 retries, 2 samples each
    drop = endpoint(default="chatter")
    t = teacher(drop.url, tmp_path / "drop", concurrency=1, samples=2, unusable="drop")
    assert torch.isnan(ask(t, TEXTS[:1])).all() and t.usage()["unusable"]["truncated"] == 2


def test_the_call_budget_stops_with_every_paid_answer_kept(endpoint, tmp_path):
    e = endpoint()
    with pytest.raises(KdflowError, match=r"model.teacher.max_calls \(3\) is spent; 3 answers are cached"):
        ask(teacher(e.url, tmp_path, concurrency=1, max_calls=3), TEXTS[:5])
    t = teacher(e.url, tmp_path, concurrency=1)
    ask(t, TEXTS[:5])
    assert t.usage()["calls"] == 2 and set(e.answered.values()) == {1} and len(e.answered) == 5


def test_a_server_killed_mid_run_loses_no_paid_answer_and_the_resume_repeats_none(endpoint, tmp_path):
    first = endpoint(kill_after=3)
    with pytest.raises(KdflowError, match="failed .* tries; [3-9] answers are cached"):
        ask(teacher(first.url, tmp_path, concurrency=2, max_retries=2), TEXTS)
    kept = len(next(tmp_path.glob("remote-*")).joinpath("answers.jsonl").read_text().splitlines())
    assert kept == sum(first.answered.values()) >= 3  # every answer the server sent is on disk
    second = endpoint(port=first.port)  # the same address, restarted
    t = teacher(second.url, tmp_path, concurrency=2)
    ask(t, TEXTS)
    assert t.usage()["calls"] == len(TEXTS) - kept and t.usage()["cached"] == kept
    both = first.answered + second.answered
    assert len(both) == len(TEXTS) and set(both.values()) == {1}  # no prompt was paid twice


def test_distill_through_an_endpoint_keeps_the_key_off_the_disk(endpoint, tiny_bert, intents_json, tmp_path,
                                                                monkeypatch, capsys):
    e = endpoint()
    secret = "sk-kdflow-test-5f3a9c"
    texts = [t for split in ("train", "test") for t, _ in json.loads(Path(intents_json).read_text())[split]]
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "remote", train={"epochs": 1, "deterministic": True})
    raw["model"] = {"teacher": {"kind": "llm", "name": "fake-model", "base_url": e.url, "api_key_env": "KDFLOW_KEY",
                                "retry_wait": 0.01, "concurrency": 4},
                    "student": {"kind": "hf", "name": tiny_bert}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["distill", str(tmp_path / "c.yaml")]) != 0  # the key's variable is not set: one sentence
    assert "model.teacher.api_key_env names KDFLOW_KEY, which is not set" in capsys.readouterr().err
    monkeypatch.setenv("KDFLOW_KEY", secret)
    said = [f["message"] for f in kdflow.check(raw, control=False)["findings"] if f["check"] == "teacher"]
    assert said == [f"The llm teacher at {e.url} would be asked about {len(set(texts))} distinct prompts (train 160 + "
                    f"test 48 examples); 0 are answered in its cache, so at least {len(set(texts))} requests"]
    assert e.requests == []  # counted, not asked
    assert main(["distill", str(tmp_path / "c.yaml")]) == 0
    metrics = json.loads((tmp_path / "remote" / "metrics.json").read_text())["student"]
    test = json.loads(Path(intents_json).read_text())["test"]  # the fake answers by the last intent word it reads
    hits = [answer_of([{"role": "user", "content": f"Text: {text}"}]) == label for text, label in test]
    assert metrics["teacher_test"]["accuracy"] == pytest.approx(sum(hits) / len(hits))
    usage = metrics["distill"]["teacher_usage"]
    assert usage["calls"] == len(e.requests) == len(e.answered) and usage["retries"] == 0
    assert e.keys_seen == {f"Bearer {secret}"}
    written = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert written == [] and "KDFLOW_KEY" in (tmp_path / "remote" / "config.yaml").read_text()
    assert Path(tmp_path / "remote" / "log.txt").read_text().count(e.url) >= 1
    report = (tmp_path / "remote" / "report.md").read_text()  # the cost meter in the report
    assert "## Teacher calls" in report and f"| {usage['calls']} | 0 | {usage['cached']} |" in report


def test_active_learning_labels_nothing_with_an_answer_the_llm_could_not_give(endpoint, tiny_bert, intents_json,
                                                                              tmp_path):
    e = endpoint(chatter_on={"balance"})  # every prompt about a balance gets words that name no label
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "al", train={"epochs": 1, "deterministic": True})
    raw["model"] = {"teacher": {"kind": "llm", "name": "fake-model", "base_url": e.url, "retry_wait": 0.01,
                                "max_retries": 1, "samples": 2},
                    "student": {"kind": "hf", "name": tiny_bert}}
    raw["active"] = {"target": "teacher_calls", "initial": 16, "per_round": 8, "rounds": 2, "min_steps": 4,
                     "strategy": "margin", "initial_strategy": "random"}
    out = kdflow.active(raw)
    state = json.loads((tmp_path / "al" / "active" / "state.json").read_text())
    asked = {answer_of(json.loads(p)) for p in e.answered}
    dropped = {k for k, why in state["ignored"].items() if why == "the teacher gave no usable answer"}
    assert "balance" in asked and dropped  # some were picked, and none became a label
    assert all(v["label"] != "balance" for v in state["labels"].values())
    assert out["sources"] == {"teacher": len(state["labels"])} and len(state["labels"]) + len(dropped) == 24
