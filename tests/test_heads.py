"""Attention-head pruning: importance by gate gradients, exact structural removal, guards."""

import pytest
import torch

from kdflow.errors import KdflowError
from kdflow.deploy.heads import attention_blocks, head_importance, heads_to_prune, prune_heads
from kdflow.models import load_hf_classifier


@pytest.fixture()
def bert4(tiny_bert):
    """The tiny BERT (2 layers, 32 wide) with 4 heads of 8 per layer, random but fixed."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, num_labels=3,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval()


def _batch(seed=0, b=6, n=10):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, n, dtype=torch.long)
    mask[0, 7:] = 0  # padding must not matter
    return {"input_ids": torch.randint(5, 200, (b, n), generator=g), "attention_mask": mask}


def test_pruning_equals_zeroing_the_heads_output(bert4):
    import copy
    x = _batch()
    ref = copy.deepcopy(bert4)
    _, out = attention_blocks(ref)[1]
    with torch.no_grad():
        out.weight[:, 8:16] = 0  # head 1 of layer 1 contributes nothing
        out.weight[:, 24:32] = 0  # nor head 3
    n0 = sum(p.numel() for p in bert4.parameters())
    pruned = prune_heads(bert4, {1: [1, 3]})
    with torch.no_grad():
        assert torch.allclose(pruned(**x).logits, ref(**x).logits, atol=1e-5)
    sa, out = attention_blocks(pruned)[1]
    assert sa.num_attention_heads == 2 and sa.query.out_features == 16 and out.in_features == 16
    d, hidden = 8, 32  # per head: q, k, v rows (weights + bias) and the output projection's columns
    assert n0 - sum(p.numel() for p in pruned.parameters()) == 2 * (4 * d * hidden + 3 * d)


def test_importance_is_zero_for_a_dead_head_and_it_goes_first(bert4):
    _, out = attention_blocks(bert4)[0]
    with torch.no_grad():
        out.weight[:, 16:24] = 0  # layer 0, head 2 is dead
    batches = [_batch(s) for s in range(3)]
    targets = [torch.tensor([0, 1, 2, 0, 1, 2])] * 3
    imp = head_importance(bert4, batches, targets)
    assert imp.shape == (2, 4) and imp[0, 2] == 0 and (imp[0, [0, 1, 3]] > 0).all()
    assert torch.allclose(imp.norm(dim=1), torch.ones(2))  # normalised per layer
    assert heads_to_prune(imp, 1 / 8) == {0: [2]}
    assert all(not p.requires_grad or p.grad is None for p in bert4.parameters())  # no gradients left behind
    assert not bert4.training


def test_heads_to_prune_keeps_one_head_per_layer():
    imp = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, float("nan")]])
    assert heads_to_prune(imp, 0.99) == {0: [0, 1], 1: [1]}
    with pytest.raises(KdflowError, match="between 0 and 1"):
        heads_to_prune(imp, 1.5)


def test_bad_requests_get_one_sentence(bert4, tiny_bert):
    with pytest.raises(KdflowError, match="must keep one"):
        prune_heads(bert4, {0: [0, 1, 2, 3]})
    with pytest.raises(KdflowError, match="Layer 5 does not exist"):
        prune_heads(bert4, {5: [0]})
    from kdflow.models import EncoderConfig, TransformerEncoderClassifier
    with pytest.raises(KdflowError, match="BERT-style encoder"):
        attention_blocks(TransformerEncoderClassifier(EncoderConfig(num_labels=2, vocab_size=50)))
    assert len(attention_blocks(load_hf_classifier(tiny_bert, ["a", "b"], "classification"))) == 2
