"""Vocabulary pruning keeps the student's outputs on seen text exactly, shrinks it, and round-trips."""

import copy

import torch

from kdflow import HFSpec
from kdflow.models import build_hf_student, load_hf_classifier, load_saved, load_tokenizer, save_model
from kdflow.deploy.prune import prune_vocabulary, unseen_share, used_token_ids

TEXTS = ["book a flight to paris", "what is the weather in tokyo", "play some music by adele please"]


def test_pruned_student_gives_identical_logits_on_seen_text(tiny_bert, tmp_path):
    tok = load_tokenizer(tiny_bert)
    teacher = load_hf_classifier(tiny_bert, ["a", "b"], "classification")
    student = build_hf_student(HFSpec(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32),
                               teacher, ["a", "b"], "classification").eval()
    before = copy.deepcopy(student)
    pruned, ptok, kept = prune_vocabulary(student, tok, TEXTS)
    assert len(ptok) == len(kept) < 40 and pruned.get_input_embeddings().num_embeddings == len(kept)
    old = tok(TEXTS, padding=True, return_tensors="pt")
    new = ptok(TEXTS, padding=True, return_tensors="pt")
    # same tokens, renumbered
    assert torch.equal(new["input_ids"], torch.tensor([[kept.index(i) for i in row] for row in old["input_ids"].tolist()]))
    assert torch.equal(new["attention_mask"], old["attention_mask"])
    with torch.no_grad():
        torch.testing.assert_close(pruned(**new).logits, before(**old).logits)
    # an unseen word becomes [UNK]; special tokens survive
    assert ptok("zebra")["input_ids"] == [ptok.cls_token_id, ptok.unk_token_id, ptok.sep_token_id]
    assert ptok.pad_token_id == kept.index(tok.pad_token_id)
    n_before = sum(p.numel() for p in before.parameters())
    n_after = sum(p.numel() for p in pruned.parameters())
    assert n_before - n_after == (len(tok) - len(kept)) * 16
    save_model(pruned, tmp_path / "p", ptok, ["a", "b"])
    back, btok, labels, _ = load_saved(tmp_path / "p")
    with torch.no_grad():
        torch.testing.assert_close(back(**btok(TEXTS, padding=True, return_tensors="pt")).logits,
                                   before(**old).logits)


def test_unseen_share_counts_the_word_pieces_a_pruned_vocabulary_would_lose(tiny_bert):
    tok = load_tokenizer(tiny_bert)
    kept = used_token_ids(tok, TEXTS)
    assert unseen_share(tok, kept, TEXTS) == 0.0
    pieces = tok(["book a zebra"])["input_ids"][0]  # [CLS] book a zebra [SEP]
    assert unseen_share(tok, kept, ["book a zebra"]) == (len(pieces) - 4) / len(pieces)
    assert unseen_share(tok, kept, []) == 0.0
