"""Token tagging data and scores (issue 31, in progress): readers, spans to BIO, entity-level F1 by hand."""

import json

import pytest

from kdflow.data.tagging import read_conll, read_tagged_json, spans_to_bio, words
from kdflow.errors import KdflowError
from kdflow.tasks.spans import entities, span_scores


def test_conll_and_json_readers_on_hand_written_files(tmp_path):
    (tmp_path / "a.conll").write_text("-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter B-PER\n"
                                      "Blackburn I-PER\n")
    assert read_conll(tmp_path / "a.conll") == [(["EU", "rejects"], ["B-ORG", "O"]),
                                                (["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    (tmp_path / "b.jsonl").write_text(json.dumps({"tokens": ["at", "7", "pm"], "tags": ["O", "B-time", "I-time"]})
                                      + "\n" + json.dumps({"text": "two rooms", "slots": {
                                          "rooms": {"text": "two", "span": [0, 3]}}}) + "\n")
    assert read_tagged_json(tmp_path / "b.jsonl") == [(["at", "7", "pm"], ["O", "B-time", "I-time"]),
                                                      (["two", "rooms"], ["B-rooms", "O"])]
    (tmp_path / "bad.conll").write_text("EU S-ORG\n")
    with pytest.raises(KdflowError, match="Line 1 of .* has tag 'S-ORG', which is not BIO"):
        read_conll(tmp_path / "bad.conll")
    (tmp_path / "lonely.conll").write_text("EU\n")
    with pytest.raises(KdflowError, match="a token without a tag"):
        read_conll(tmp_path / "lonely.conll")
    (tmp_path / "count.jsonl").write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(KdflowError, match="has 2 tokens and 1 tags; give one tag per token"):
        read_tagged_json(tmp_path / "count.jsonl")


def test_spans_to_bio_on_the_tricky_cases():
    assert words("at 7p.m.") == [("at", 0, 2), ("7p", 3, 5), (".", 5, 6), ("m", 6, 7), (".", 7, 8)]
    # a span ending inside a word takes the whole word; punctuation is a word of its own
    toks, tags = spans_to_bio("arrive at 7pm", [(10, 11, "time")], "ex")
    assert toks == ["arrive", "at", "7pm"] and tags == ["O", "O", "B-time"]
    # nested spans (NLU++ has two): the longer is kept, the other dropped with a note
    notes = []
    toks, tags = spans_to_bio("only today", [(0, 10, "date_period"), (5, 10, "date")], "ex", notes)
    assert tags == ["B-date_period", "I-date_period"] and "'date' dropped" in notes[0]
    # crossing spans of equal length: the earlier wins
    _, tags = spans_to_bio("a b c", [(2, 5, "y"), (0, 3, "x")], "ex", [])
    assert tags == ["B-x", "I-x", "O"]
    # nothing to tag, and bad spans
    assert spans_to_bio("", [], "ex") == ([], [])
    for span, message in (((3, 3, "t"), "empty or outside"), ((0, 99, "t"), "empty or outside"),
                          ((1, 2, "t"), "over no word")):
        with pytest.raises(KdflowError, match=message):
            spans_to_bio("a  b", [span], "Row 4 of 'x.json'")


def test_slot_text_must_match_its_span(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps([{"text": "two rooms", "slots": {"rooms": {"text": "three",
                                                                                           "span": [0, 3]}}}]))
    with pytest.raises(KdflowError, match="slot 'rooms' whose span \\[0, 3\\) reads 'two', not its text 'three'"):
        read_tagged_json(tmp_path / "s.json")


def test_nlupp_slots_read_as_bio(shared_data):
    notes = []
    sents = [s for k in range(20) for s in read_tagged_json(shared_data / "nlupp" / "hotels" / f"fold{k}.json",
                                                            notes)]
    assert len(sents) == 1009 and len(notes) == 2  # the two nested slot pairs of the data set
    rows = [r for k in range(20) for r in json.loads((shared_data / "nlupp" / "hotels" / f"fold{k}.json")
                                                         .read_text())]
    kept = sum(len(r.get("slots", {})) for r in rows) - 2
    assert sum(t.startswith("B-") for _, tags in sents for t in tags) == kept


def test_entity_scores_by_hand():
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 4),
                                                                             ("LOC", 5, 5)}
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["O", "B-ORG"]]
    # true entities 3, predicted 3, exact matches 2 (PER is cut short): P = R = F1 = 2/3; 5 of 6 tags right
    s = span_scores(true, pred)
    assert s["span_f1"] == pytest.approx(2 / 3) and s["span_precision"] == pytest.approx(2 / 3)
    assert s["token_accuracy"] == pytest.approx(5 / 6) and s["per_type"] == {"LOC": 1.0, "ORG": 1.0, "PER": 0.0}
    assert span_scores([["O"]], [["O"]])["span_f1"] == 1.0  # nothing to find, nothing found
    with pytest.raises(ValueError, match="one predicted tag per true tag"):
        span_scores([["O", "O"]], [["O"]])
