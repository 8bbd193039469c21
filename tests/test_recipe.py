"""The defaults carry the recipe: a config with only data and a teacher gets a student built from the
teacher (half its blocks, its width, its embeddings), a pruned vocabulary and the learning rate that
suits it; ``kdflow config`` shows every auto setting resolved."""

import json

import pytest
import yaml

from kdflow import api
from kdflow.cli import main
from kdflow.config import Config, HFSpec, TrainConfig, learning_rate
from kdflow.errors import KdflowError
from kdflow.diagnose.recipe import auto_settings

from conftest import tiny_config


def test_defaults_are_auto_and_resolve_by_rule():
    cfg = Config(data={"train": "x.csv"})
    s = cfg.model.student
    assert (s.kind, s.name, s.num_layers, s.hidden_size, s.init_from_teacher, s.prune_vocab) == \
        ("hf", None, None, None, None, None)
    assert cfg.train.lr is None and cfg.teach.lr is None and cfg.train.batch_size == 32 and cfg.train.patience == 5
    assert learning_rate(cfg.train, "student", pretrained=True) == 1e-4
    assert learning_rate(cfg.train, "student", pretrained=False) == 1e-3
    assert learning_rate(cfg.teach, "teacher", pretrained=True) == 5e-5
    assert learning_rate(TrainConfig(lr=3e-3), "student", pretrained=True) == 3e-3  # given wins


def test_kdflow_config_shows_the_recipe(tiny_bert, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"teacher": {"name": tiny_bert}}, "data": {"train": "x.csv"}}))
    assert main(["config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "auto settings (null above)" in out and "2 blocks, width 32" in out
    assert "model.student.num_layers: 1" in out and "half the teacher's 2 blocks" in out
    assert "model.student.init_from_teacher: true" in out and "teacher blocks 1 copied" in out
    assert "model.student.prune_vocab: true" in out
    assert "train.lr: 0.0001" in out and "teach.lr: 5e-05" in out
    # a narrower student: embeddings through PCA, blocks random, so the random-block rate
    _, rows = auto_settings(Config.model_validate({"model": {"teacher": {"name": tiny_bert},
                                                             "student": {"hidden_size": 16, "num_heads": 2}},
                                                   "data": {"train": "x.csv"}}))
    found = {k: (v, why) for k, v, why in rows}
    assert "PCA" in found["model.student.init_from_teacher"][1] and found["train.lr"][0] == "0.001"


def test_distill_with_the_defaults_builds_the_recipe_student(tiny_bert, intents_json, tmp_path):
    cfg = tiny_config(tiny_bert, intents_json, tmp_path, "recipe")
    api.teach(cfg)
    del cfg["model"]["student"]
    del cfg["train"]["lr"]
    entry = api.distill(cfg)
    saved = json.loads((tmp_path / "recipe" / "student" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 1 and saved["hidden_size"] == 32  # half the blocks, the teacher's width
    assert saved["kdflow_teacher_layers"] == [1]  # its block copied from the teacher's last
    assert saved["vocab_size"] < 200  # pruned to the synthetic intents' few words
    log = (tmp_path / "recipe" / "log.txt").read_text()
    assert "1 layer x 32 (2 heads, intermediate 64): the teacher's embeddings, blocks [1] and task head copied " \
           "(init_from_teacher auto)" in log
    assert "vocabulary pruned to the training text (prune_vocab auto)" in log
    assert "learning rate 0.0001 (auto: its blocks start pretrained)" in log
    # its accuracy is no test here: from 0.31 to 1.0 over ten seeds of this tiny teacher (BENCHMARKS.md, "Test
    # margins"); the recipe's quality is measured on CLINC150 and SST-2 (BENCHMARKS.md, "The recipe's defaults")
    assert 0.0 <= entry["test"]["accuracy"] <= 1.0


def test_prune_vocab_auto_keeps_the_vocabulary_when_validation_reads_unseen_words(tiny_bert, intents_json, tmp_path):
    raw = json.loads(open(intents_json).read())
    raw["val"] = [[f"{text} zebra quasar marmalade xylophone", label] for text, label in raw["val"]]
    path = tmp_path / "unseen.json"
    path.write_text(json.dumps(raw))
    cfg = tiny_config(tiny_bert, str(path), tmp_path, "unseen", teach={"epochs": 1}, train={"epochs": 1})
    api.teach(cfg)
    del cfg["model"]["student"]
    api.distill(cfg)
    saved = json.loads((tmp_path / "unseen" / "student" / "config.json").read_text())
    assert saved["vocab_size"] == json.loads((tmp_path / "unseen" / "teacher" / "config.json").read_text())["vocab_size"]
    log = (tmp_path / "unseen" / "log.txt").read_text()
    assert "vocabulary kept whole (prune_vocab auto)" in log and "never occur in the training text, more than 3%" in log
    cfg["model"]["student"] = {"prune_vocab": True}  # asked for, it prunes all the same
    cfg["run"]["name"] = "unseen-pruned"
    cfg["model"]["teacher"]["name"] = str(tmp_path / "unseen" / "teacher")
    api.distill(cfg)
    assert json.loads((tmp_path / "unseen-pruned" / "student" / "config.json").read_text())["vocab_size"] < 200


def test_auto_init_falls_back_in_words_and_explicit_init_still_refuses(tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification

    from kdflow.models import build_hf_student, copied_blocks
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    other = HFSpec(num_layers=1, intermediate_size=48)  # the teacher's width, another feed-forward size
    student = build_hf_student(other, teacher, ["a", "b"], "classification")
    assert copied_blocks(student) == []  # embeddings only: no block has the student's shape
    # the teacher's embeddings, through a square PCA projection (a rotation: row norms kept)
    s_rows, t_rows = student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight
    assert torch.allclose(s_rows.norm(dim=1), t_rows.norm(dim=1), atol=1e-4)
    with pytest.raises(KdflowError, match="must equal the teacher's"):
        build_hf_student(other.model_copy(update={"init_from_teacher": True}), teacher, ["a", "b"], "classification")
    off = build_hf_student(HFSpec(num_layers=1, init_from_teacher=False), teacher, ["a", "b"], "classification")
    assert copied_blocks(off) == []
    on = build_hf_student(HFSpec(num_layers=1), teacher, ["a", "b"], "classification")
    assert copied_blocks(on) == [1]
    assert torch.equal(on.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight)
