"""The Discrete Key-Value Bottleneck student (``kind: dkvb``): the lookup, the freezing rule, the gradient's
reach, k-means keys, codebook health, save/load, ONNX, and ``kdflow distill`` from a config."""

import importlib.util
import json

import pytest
import torch

from conftest import tiny_config
from margins import SEED, at_least, at_most
from kdflow.config import MODEL_SPECS, TrainConfig
from kdflow.errors import KdflowError
from kdflow.models import BuildContext, load_saved, save_model
from kdflow.models.dkvb import KIND, init_keys, kmeans
from kdflow.engine.train import make_optimizer

LABELS = ["a", "b", "c"]
TEXTS = ["book a flight to paris", "play some music", "what is the weather", "check my balance",
         "reserve a seat to rome", "put on songs by adele", "will it rain today", "how much money is left"]


@pytest.fixture(scope="module")
def world(tiny_bert):
    from kdflow.models import load_hf_classifier, load_tokenizer
    return load_hf_classifier(tiny_bert, LABELS, "classification"), load_tokenizer(tiny_bert)


def build(world, **sizes):
    teacher, tok = world
    spec = MODEL_SPECS["dkvb"].model_validate({"kind": "dkvb", "heads": 4, "keys": 6, "key_dim": 3, **sizes})
    torch.manual_seed(SEED)
    model, s_tok = KIND.student(spec, BuildContext(LABELS, "classification", 16, tok, teacher))
    batch = dict(s_tok(TEXTS, padding=True, return_tensors="pt"))
    return model, s_tok, batch


def fitted(world, **sizes):
    model, tok, batch = build(world, **sizes)
    init_keys(model, [batch], seed=0)
    return model, tok, batch


def test_shapes_and_the_parameter_free_decoder(world):
    model, _, batch = fitted(world)
    out = model(**batch)
    assert out.logits.shape == (8, 3)
    assert model.decoder is None and model.values.shape == (4, 6, 3)
    # the logits are the mean of the C fetched values
    index = model.assign(model.project(model.embed(batch["input_ids"], batch["attention_mask"])))
    with torch.no_grad():
        model.values.copy_(torch.randn_like(model.values))
    expected = torch.stack([model.values[c, index[:, c]] for c in range(4)], 1).mean(1)
    torch.testing.assert_close(model(**batch).logits, expected)
    with_decoder, _, _ = fitted(world, value_dim=5)
    assert with_decoder.values.shape == (4, 6, 5) and with_decoder(**batch).logits.shape == (8, 3)


def test_the_student_uses_the_teachers_lower_blocks_frozen_by_default(world):
    teacher, _ = world
    model, tok, _ = build(world)
    assert tok is world[1]
    assert model.encoder.config.num_hidden_layers == 1  # half of the teacher's 2 blocks
    torch.testing.assert_close(model.encoder.encoder.layer[0].output.dense.weight,
                               teacher.bert.encoder.layer[0].output.dense.weight)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"values"}
    assert "keys" not in dict(model.named_parameters())  # a buffer: no optimizer can reach it
    model.train()
    assert model.training and not model.encoder.training  # the frozen encoder keeps dropout off


def test_nearest_key_assignment_on_a_hand_made_case(world):
    model, _, _ = build(world, heads=2, keys=3, key_dim=2)
    with torch.no_grad():
        model.keys.copy_(torch.tensor([[[0., 0.], [10., 0.], [0., 10.]],
                                       [[1., 1.], [-1., -1.], [5., 5.]]]))
    h = torch.tensor([[[9., 1.], [-2., -1.]],
                      [[1., 8.], [4., 6.]],
                      [[0.4, -0.2], [0.9, 1.2]]])
    assert model.assign(h).tolist() == [[1, 1], [2, 2], [0, 0]]


def test_unfitted_keys_are_refused(world):
    model, _, batch = build(world)
    with pytest.raises(KdflowError, match="not fitted"):
        model(**batch)


def test_keys_and_encoder_stay_frozen_while_values_learn(world):
    model, _, batch = fitted(world)
    keys, encoder = model.keys.clone(), {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt, _ = make_optimizer(model, TrainConfig(lr=0.05, weight_decay=0.1, warmup_ratio=0.0), steps=1000)
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    model.train()
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    at_most("dkvb: loss after 20 steps / first loss", losses[-1] / losses[0], 0.7)  # the values learn
    assert torch.equal(model.keys, keys)  # the keys never move, in train mode either
    assert all(torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items())


def test_only_the_selected_values_receive_gradient(world):
    model, _, batch = fitted(world)
    index = model.assign(model.project(model.embed(batch["input_ids"], batch["attention_mask"])))
    model(**batch).logits[:2, 0].sum().backward()  # the loss of the first two inputs only
    touched = model.values.grad.abs().sum(-1) > 0  # [C, K]
    selected = torch.zeros_like(touched)
    for c in range(4):
        selected[c, index[:2, c]] = True
    assert torch.equal(touched, selected) and not selected.all()


def test_weight_decay_never_reaches_the_values_no_input_selects(world):
    model, _, batch = fitted(world)
    with torch.no_grad():
        model.values.fill_(1.0)
    index = model.assign(model.project(model.embed(batch["input_ids"][:1], batch["attention_mask"][:1])))
    opt, _ = make_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.5, warmup_ratio=0.0), steps=1)
    first = {k: batch[k][:1] for k in batch}
    torch.nn.functional.cross_entropy(model(**first).logits, torch.tensor([0])).backward()
    opt.step()
    moved = (model.values != 1.0).any(-1)
    for c in range(4):
        assert moved[c].nonzero().flatten().tolist() == [index[0, c].item()]


def test_kmeans_finds_well_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0., 0.], [10., 10.], [-10., 10.]])
    points = (centres.repeat_interleave(30, 0) + 0.1 * torch.randn(90, 2, generator=g)).unsqueeze(0)
    found = kmeans(points, 3, 10, torch.Generator().manual_seed(1))[0]
    order = torch.cdist(centres, found).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2]
    torch.testing.assert_close(found[order], centres, atol=0.1, rtol=0)


def test_codebook_health_counts_used_and_dead_keys(world):
    model, _, batch = fitted(world)
    health = model.codebook_health([batch])
    assert health["keys"] == 24 and health["examples"] == 8
    assert health["dead_keys"] == 24 - sum(len(set(c)) for c in
                                           model.assign(model.project(model.embed(
                                               batch["input_ids"], batch["attention_mask"]))).T.tolist())
    with torch.no_grad():  # every input at key 0 of every head: perplexity 1, five dead keys per head
        model.keys.fill_(1e6)
        model.keys[:, 0] = 0.0
    health = model.codebook_health([batch])
    assert health["dead_keys"] == 20 and health["perplexity"] == 1.0 and health["keys_used"] == round(4 / 24, 4)


def test_save_and_load_round_trip(world, tmp_path):
    model, tok, batch = fitted(world)
    with torch.no_grad():
        model.values.copy_(torch.randn_like(model.values))
    save_model(model, tmp_path / "s", tok, LABELS)
    back, tok2, labels, _ = load_saved(tmp_path / "s")
    assert labels == LABELS and type(back).__name__ == "DKVBClassifier"
    assert torch.equal(back.keys, model.keys) and torch.equal(back.projection, model.projection)
    model.eval()
    back.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(**batch).logits, model(**batch).logits)
    (tmp_path / "s" / "kdflow_dkvb.json").write_text("{broken")
    with pytest.raises(KdflowError, match="kdflow_dkvb.json' is not valid JSON"):
        load_saved(tmp_path / "s")


def test_onnx_export_keeps_the_nearest_key_lookup(world, tmp_path):
    pytest.importorskip("onnxruntime")
    from kdflow.deploy.export import export_onnx, max_abs_diff, ort_runner, ort_session
    model, tok, batch = fitted(world)
    with torch.no_grad():
        model.values.copy_(torch.randn_like(model.values))
    model.eval()
    path = export_onnx(model, {k: batch[k][:2] for k in batch}, tmp_path / "m.onnx")
    run = ort_runner(ort_session(path))
    other = dict(tok(["turn the music up", "a flight to oslo tomorrow please", "rain"], padding=True,
                     return_tensors="pt"))
    assert max_abs_diff(lambda b: model(**b).logits, run, [batch, other]) < 1e-4


def test_kdflow_distill_trains_a_dkvb_student_from_yaml(tiny_bert, intents_json, tmp_path, capsys):
    from kdflow.cli import main
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "dkvb",
                      model={"teacher": {"name": tiny_bert},
                             "student": {"kind": "dkvb", "heads": 8, "keys": 16, "key_dim": 4}},
                      train={"epochs": 4, "lr": None, "batch_size": 16, "patience": None, "deterministic": True})
    cfg = tmp_path / "dkvb.yaml"
    import yaml
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["teach", str(cfg)]) == 0
    assert main(["distill", str(cfg)]) == 0
    metrics = json.loads((tmp_path / "dkvb" / "metrics.json").read_text())["student"]
    log = (tmp_path / "dkvb" / "log.txt").read_text()
    assert "DKVB keys fitted by k-means on 160 training inputs" in log and "learning rate 0.1 " in log
    assert metrics["codebook"]["train"]["examples"] == 160 and metrics["codebook"]["test"]["examples"] == 48
    at_least("dkvb: student test accuracy", metrics["test"]["accuracy"], 0.55)  # 4 intents, chance 0.25
    back, _, _, _ = load_saved(tmp_path / "dkvb" / "student")
    assert type(back).__name__ == "DKVBClassifier"
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "dkvb")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    if importlib.util.find_spec("onnxruntime"):  # deployable like every student: ONNX and int8 score alike
        assert main(["export", str(tmp_path / "dkvb"), "--onnx"]) == 0
        deploy = {r["model"]: r for r in json.loads((tmp_path / "dkvb" / "metrics.json").read_text())["deploy"]}
        at_most("dkvb: |onnx - pytorch| test accuracy", abs(deploy["student-onnx"]["accuracy"] - metrics["test"]["accuracy"]),
                0.03)
    # refused before any work, and the run folder is left as it was
    before = (tmp_path / "dkvb" / "config.yaml").read_text()
    assert main(["distill", str(cfg), "--overwrite", "--set", "distill.intermediate=true"]) == 2
    assert (tmp_path / "dkvb" / "config.yaml").read_text() == before


def test_dkvb_is_refused_as_a_teacher(tiny_bert, intents_json, tmp_path, capsys):
    from kdflow.cli import main
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "dkvb-t", model={"teacher": {"kind": "dkvb"}})
    cfg = tmp_path / "t.yaml"
    import yaml
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["teach", str(cfg)]) == 2
    assert "kind dkvb is a student" in capsys.readouterr().err


def test_a_frozen_encoder_runs_once_per_text_while_training(world):
    model, tok, batch = fitted(world)
    calls = []
    model.encoder.register_forward_hook(lambda module, args, output: calls.append(len(args[0]) if args else 0))
    model.eval()
    with torch.no_grad():
        reference = model(**batch).logits
    model.train()
    first = model(**batch).logits
    # the same texts again, padded to another length inside a larger batch, with one new text
    bigger = dict(tok(TEXTS + ["a much longer sentence about nothing at all in particular"], padding=True,
                      return_tensors="pt"))
    second = model(**bigger).logits
    assert len(calls) == 3 and len(model.memo) == 9  # eval, the first training batch, then the one new text
    torch.testing.assert_close(first, reference)
    torch.testing.assert_close(second[:8], reference, atol=1e-5, rtol=0)
    with torch.no_grad():
        model.eval()
        model(**batch)
    assert len(calls) == 4  # eval mode never reads the memo


def test_more_keys_than_distinct_inputs_is_refused(world):
    model, _, batch = build(world, keys=6)
    twice = {k: torch.cat([v[:4], v[:4]]) for k, v in batch.items()}  # 8 inputs, 4 distinct
    with pytest.raises(KdflowError, match="only 4 distinct inputs"):
        init_keys(model, [twice])


def test_the_pooler_is_dropped_and_the_auto_rate_follows_the_encoder(world):
    model, _, _ = build(world)
    assert model.encoder.pooler is None
    frozen = MODEL_SPECS["dkvb"].model_validate({"kind": "dkvb"})
    assert KIND.lr(frozen) == 0.1 and KIND.lr(frozen.model_copy(update={"freeze_encoder": False})) is None
