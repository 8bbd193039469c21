"""teach -> distill in all three modes on a tiny random BERT; cache reuse; resume; frozen teacher."""

import json

import pytest
import torch
from safetensors.torch import load_file

import kdflow
from kdflow import KdflowError
from kdflow.distillation.distiller import Distiller

from conftest import tiny_config
from margins import at_least


@pytest.fixture(scope="session")
def taught(tmp_path_factory, tiny_bert, intents_json):
    out = tmp_path_factory.mktemp("runs")
    raw = tiny_config(tiny_bert, intents_json, out, "base")
    entry = kdflow.teach(raw)
    return raw, out, entry


def student_cfg(taught, name, cache=None, **sections):
    """A distill config of its own: its own run folder and (unless shared on purpose) its own cache."""
    raw, out, _ = taught
    cfg = json.loads(json.dumps(raw))
    cfg["run"]["name"] = name
    cfg["model"]["teacher"]["name"] = str(out / "base" / "teacher")
    cfg["distill"] = {"cache_dir": str(out / f"cache-{cache or name}")}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def test_teacher_learns_the_task(taught):
    raw, out, entry = taught
    at_least("modes: teacher validation accuracy", entry["validation"]["accuracy"], 0.35)  # chance is 0.25
    folder = out / "base" / "teacher"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "kdflow_labels.json"):
        assert (folder / name).is_file()
    assert json.loads((folder / "kdflow_labels.json").read_text())["labels"] == ["balance", "flight", "music", "weather"]
    assert (out / "base" / "config.yaml").is_file() and (out / "base" / "checkpoints" / "teacher" / "best.safetensors").is_file()


def test_teacher_scores_test_after_the_training_loop(taught, monkeypatch):
    """The teacher's pass over test (for the side-by-side numbers) runs after the epochs, not before them:
    it is not training time, and a run that fails in its loop has not spent it."""
    import kdflow.distillation.teacher_cache as tc
    import kdflow.engine.train as tr
    events, real_logits, real_epoch = [], tc.teacher_logits, tr.train_epoch

    def logits(run, teacher, split, *args, **kwargs):
        events.append(f"teacher on {len(split)}")
        return real_logits(run, teacher, split, *args, **kwargs)

    def epoch(*args, **kwargs):
        events.append("epoch")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(tc, "teacher_logits", logits)
    monkeypatch.setattr(tr, "train_epoch", epoch)
    entry = kdflow.distill(student_cfg(taught, "order", distill={"mode": "online"}, train={"epochs": 2}))
    assert events == ["epoch", "epoch", "teacher on 48"]  # online: no teacher pass before the loop at all
    assert entry["distill"]["teacher_examples_computed"] == 48
    assert entry["teacher_test"]["accuracy"] == pytest.approx(kdflow.evaluate(str(taught[1] / "base"),
                                                                              role="teacher")["accuracy"])


def test_offline_caches_teacher_outputs_once(taught):
    first = kdflow.distill(student_cfg(taught, "off1", train={"epochs": 8}))
    d = first["distill"]
    assert d["mode"] == "offline" and d["target_refreshes"] == 1 and d["teacher_calls_in_loop"] == 0
    assert d["teacher_examples_computed"] == 160 + 48  # train targets, then the test split for the table
    second = kdflow.distill(student_cfg(taught, "off2", cache="off1", train={"epochs": 1}))
    assert second["distill"]["teacher_examples_computed"] == 0  # every output served from the cache
    log = (taught[1] / "off2" / "log.txt").read_text()
    assert "teacher outputs: 0 computed, 160 from cache" in log
    # the cached teacher test numbers are those of the live teacher
    live = kdflow.evaluate(str(taught[1] / "base"), role="teacher")
    assert first["teacher_test"]["accuracy"] == pytest.approx(live["accuracy"])
    assert second["teacher_test"]["accuracy"] == pytest.approx(live["accuracy"])
    at_least("modes: offline student validation accuracy", first["validation"]["accuracy"], 0.35)  # chance 0.25
    run = taught[1] / "off1"
    for name in ("config.yaml", "metrics.csv", "metrics.json", "log.txt", "student/model.safetensors",
                 "student/tokenizer.json", "student/kdflow_labels.json", "checkpoints/student/last/trainer_state.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard" / "student").glob("events.*"))
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + 8
    teacher_params = taught[2]["parameters"]
    assert first["compression"] == round(teacher_params / first["parameters"], 2) and first["compression"] > 2


def test_cached_targets_equal_live_teacher_outputs(taught, tmp_path):
    from kdflow.config import load_config
    from kdflow.data import TextFeaturizer, load_data
    from kdflow.models import load_saved
    from kdflow.pipeline import Run
    from kdflow.distillation.teacher_cache import TeacherCache, teacher_logits
    from kdflow.engine.train import make_accelerator

    cfg = load_config(student_cfg(taught, "check"))
    teacher, tok, _, _ = load_saved(taught[1] / "base" / "teacher")
    data = load_data(cfg.data)
    ctx = Run(cfg, data, make_accelerator(cfg.train), None)
    feat = TextFeaturizer(tok, 32)
    cache = TeacherCache(tmp_path, "fp")
    # a subset first (as active learning does), then the whole split: only the rest is computed
    part = data.train.subset(list(range(0, 160, 3)))
    teacher_logits(ctx, teacher, part, feat, cache)
    assert cache.computed == len(part)
    for split in (data.train, data.test):
        cached = teacher_logits(ctx, teacher, split, feat, cache)
        live = teacher_logits(ctx, teacher, split, TextFeaturizer(tok, 32), None)
        torch.testing.assert_close(cached, live, rtol=1e-4, atol=1e-5)
    assert cache.computed == 160 + 48
    again = TeacherCache(tmp_path, "fp")  # a new process reads it all back from disk
    assert len(again) == 208 and torch.equal(again.get(data.test.ids, None), cached)


def test_cache_buffers_rows_until_flush_every(tmp_path):
    from kdflow.distillation.teacher_cache import TeacherCache
    calls = []

    def compute(rows):
        calls.append(len(rows))
        return torch.arange(len(rows) * 2, dtype=torch.float32).reshape(len(rows), 2) + 10 * len(calls)

    cache = TeacherCache(tmp_path, "fp", flush_every=5)
    first = cache.get(["a", "b", "c"], compute)
    assert list(cache.folder.glob("part-*.pt")) == []  # 3 pending < 5
    cache.get(["b", "d", "e"], compute)  # b is served from memory; 5 pending: one file
    assert calls == [3, 2] and cache.served == 1
    assert len(list(cache.folder.glob("part-*.pt"))) == 1
    cache.get(["f"], compute)
    cache.flush()
    cache.flush()  # nothing pending: no empty file
    again = TeacherCache(tmp_path, "fp")
    assert len(again) == 6 and len(list(again.folder.glob("part-*.pt"))) == 2
    assert torch.equal(again.get(["a", "b", "c"], None), first)


def test_online_runs_teacher_every_batch_and_keeps_it_frozen(taught, monkeypatch):
    seen = []
    real_init = Distiller.__init__

    def spy(self, teacher, *args, **kwargs):
        real_init(self, teacher, *args, **kwargs)
        seen.append(self)

    monkeypatch.setattr(Distiller, "__init__", spy)
    saved = load_file(taught[1] / "base" / "teacher" / "model.safetensors")
    entry = kdflow.distill(student_cfg(taught, "online", train={"epochs": 2}, distill={"mode": "online"}))
    assert entry["distill"]["teacher_calls_in_loop"] == 2 * 160
    assert entry["distill"]["target_refreshes"] == 0
    teacher = seen[0].teacher  # the in-memory teacher after training: unchanged, frozen, not wrapped
    assert type(teacher).__name__ == "BertForSequenceClassification"
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    live = teacher.state_dict()
    assert all(torch.equal(saved[k], live[k].cpu()) for k in saved)


def test_guide_trains_the_teacher_and_refreshes_every_k(taught, tiny_bert):
    # the guide teacher starts from the untrained base model and learns alongside the student
    cfg = student_cfg(taught, "guide", train={"epochs": 4}, distill={"mode": "guide", "guide_every": 2})
    cfg["model"]["teacher"]["name"] = tiny_bert
    entry = kdflow.distill(cfg)
    assert entry["distill"]["target_refreshes"] == 2  # epochs 0 and 2
    rows = (taught[1] / "guide" / "metrics.csv").read_text().splitlines()
    guide_rows = [r for r in rows if r.startswith("teacher_guide,")]
    assert len(guide_rows) == 4
    header = rows[0].split(",")
    # the teacher kept training: a training loss and a validation score every epoch (how much it learns in 4 epochs
    # is no test: from nothing to +0.75 validation accuracy over ten seeds, BENCHMARKS.md "Test margins")
    assert all(float(r.split(",")[header.index("loss")]) > 0 and r.split(",")[header.index("val_accuracy")]
               for r in guide_rows)


def test_no_kd_baseline_never_runs_the_teacher(taught):
    entry = kdflow.distill(student_cfg(taught, "nokd", train={"epochs": 1}, distill={"alpha": 0.0}))
    d = entry["distill"]
    assert d["target_refreshes"] == 0 and d["teacher_calls_in_loop"] == 0 and d["teacher_examples_computed"] is None
    assert "teacher_test" not in entry and not (taught[1] / "cache-nokd").exists()
    assert "loss_kd" not in (taught[1] / "nokd" / "metrics.csv").read_text().splitlines()[0]


def test_resume_after_a_killed_epoch_matches_an_uninterrupted_run(taught, monkeypatch):
    import kdflow.engine.train as train_mod

    straight = kdflow.distill(student_cfg(taught, "straight", train={"epochs": 3}))
    real = train_mod.train_epoch
    calls = {"n": 0}

    def dies_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        kdflow.distill(student_cfg(taught, "killed", train={"epochs": 3}))
    monkeypatch.setattr(train_mod, "train_epoch", real)
    state = json.loads((taught[1] / "killed" / "checkpoints" / "student" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 0
    with pytest.raises(KdflowError, match="pass --resume"):
        kdflow.distill(student_cfg(taught, "killed", train={"epochs": 3}))
    with pytest.raises(KdflowError, match="Cannot resume: epochs was 3 and is now 4"):
        kdflow.distill(student_cfg(taught, "killed", train={"epochs": 4}), resume=True)
    resumed = kdflow.distill(student_cfg(taught, "killed", train={"epochs": 3}), resume=True)
    assert "resumed from" in (taught[1] / "killed" / "log.txt").read_text()
    a = load_file(taught[1] / "straight" / "student" / "model.safetensors")
    b = load_file(taught[1] / "killed" / "student" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["validation"] == straight["validation"]


def test_distill_without_a_trained_teacher_says_what_to_do(tmp_path, tiny_bert, intents_json):
    with pytest.raises(KdflowError, match="run 'kdflow teach' with this config first"):
        kdflow.distill(tiny_config(tiny_bert, intents_json, tmp_path, "x"))
    with pytest.raises(KdflowError, match="no checkpoint to resume|no student checkpoint to resume"):
        kdflow.distill(tiny_config(tiny_bert, intents_json, tmp_path, "y", distill={"alpha": 0.0}), resume=True)


def test_rejected_command_leaves_the_run_folder_alone(taught):
    cfg = student_cfg(taught, "keep", train={"epochs": 1})
    kdflow.distill(cfg)
    run = taught[1] / "keep"
    before = {p: p.read_bytes() for p in (run / "config.yaml", run / "metrics.json", run / "log.txt")}
    with pytest.raises(KdflowError, match="already holds a student"):
        kdflow.distill(student_cfg(taught, "keep", train={"epochs": 1}, distill={"temperature": 2.0}))
    bad = student_cfg(taught, "keep", train={"epochs": 1})
    bad["data"]["path"] = str(taught[1] / "missing.json")
    with pytest.raises(KdflowError, match="does not exist"):
        kdflow.distill(bad, overwrite=True)  # bad input: nothing is deleted
    assert all(p.read_bytes() == b for p, b in before.items())
    # --overwrite replaces the student and its records, not the teacher's
    kdflow.distill(student_cfg(taught, "keep", train={"epochs": 2}), overwrite=True)
    rows = (run / "metrics.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows] == [["student", "0"], ["student", "1"]]


def test_evaluate_a_run_folder(taught):
    kdflow.distill(student_cfg(taught, "ev", train={"epochs": 2}))
    result = kdflow.evaluate(str(taught[1] / "ev"))
    saved = json.loads((taught[1] / "ev" / "metrics.json").read_text())["student"]["test"]
    assert result["examples"] == 48 and result["accuracy"] == pytest.approx(saved["accuracy"])
    teacher = kdflow.evaluate(str(taught[1] / "base"), role="teacher", split="validation")
    assert teacher["accuracy"] == pytest.approx(taught[2]["validation"]["accuracy"])


def test_numeric_sequences_teacher_and_student_encoders(tmp_path):
    """Time series through the same path: JSONL lists -> encoder teacher -> smaller encoder student."""
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(0)
    rows = []
    for i in range(240):
        y = i % 2
        series = np.cumsum(rng.normal(0, 0.1, 16)) + (1 if y else -1) * np.linspace(0, 1, 16)
        rows.append({"series": series.round(4).tolist(), "trend": "up" if y else "down"})
    pd.DataFrame(rows[:200]).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    pd.DataFrame(rows[200:]).to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    raw = {"model": {"teacher": {"kind": "encoder", "input_dim": 1, "num_layers": 2, "hidden_size": 32, "num_heads": 4},
                     "student": {"kind": "encoder", "input_dim": 1, "num_layers": 1, "hidden_size": 8, "num_heads": 2}},
           "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl"),
                    "values_column": "series", "label_column": "trend", "max_length": 16},
           "teach": {"epochs": 6, "lr": 3e-3, "batch_size": 16, "patience": None},
           "train": {"epochs": 6, "lr": 3e-3, "batch_size": 16, "patience": None},
           "run": {"name": "series", "output_dir": str(tmp_path / "runs"), "quiet": True}}
    teacher = kdflow.teach(raw)
    student = kdflow.distill(raw)
    at_least("modes: sequences teacher test accuracy", teacher["test"]["accuracy"], 0.7)  # chance 0.5
    at_least("modes: sequences student test accuracy", student["test"]["accuracy"], 0.7)
    assert student["compression"] > 5 and student["distill"]["teacher_examples_computed"] == 180 + 40
    bad = dict(raw, data=dict(raw["data"], values_column="trend"))
    with pytest.raises(KdflowError, match="is not a non-empty list of numbers"):
        kdflow.teach(bad, overwrite=True)


def test_regression_end_to_end(tmp_path, tiny_bert):
    import pandas as pd
    words = ["good", "great", "fine", "bad", "awful", "poor", "okay", "nice"]
    score = {"good": 0.8, "great": 1.0, "fine": 0.5, "bad": 0.2, "awful": 0.0, "poor": 0.1, "okay": 0.4, "nice": 0.7}
    rows = [{"text": f"the film was {a} and the cast {b}", "label": (score[a] + score[b]) / 2}
            for a in words for b in words]
    pd.DataFrame(rows).to_csv(tmp_path / "r.csv", index=False)
    raw = tiny_config(tiny_bert, "", tmp_path, "reg")
    raw["data"] = {"train": str(tmp_path / "r.csv"), "task": "regression", "max_length": 16}
    raw["teach"].update(epochs=10)
    teacher = kdflow.teach(raw)
    assert set(teacher["validation"]) == {"mse", "neg_mse", "pearson", "spearman"}
    at_least("modes: regression teacher validation pearson", teacher["validation"]["pearson"], 0.45)  # chance 0
    student = kdflow.distill(raw)
    # the student's MSE is only checked finite: over ten seeds it ranged 0.04-0.20, and predicting the mean scores
    # about 0.05, so "it learnt" cannot be claimed of it here
    assert {"mode", "alpha"} <= set(student["distill"]) and 0 <= student["validation"]["mse"] < float("inf")
    assert "loss_kd" in (tmp_path / "reg" / "metrics.csv").read_text().splitlines()[0]


def test_bf16_mixed_precision_flag_on_cpu(taught, monkeypatch):
    dtypes = []
    real_call = Distiller.__call__

    def spy(self, student, batch):
        out = real_call(self, student, batch)
        dtypes.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return out

    monkeypatch.setattr(Distiller, "__call__", spy)
    entry = kdflow.distill(student_cfg(taught, "bf16", train={"epochs": 2, "mixed_precision": "bf16",
                                                              "deterministic": False}))
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    rows = (taught[1] / "bf16" / "metrics.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("loss")]) for r in rows[1:]]
    assert all(0 < x < 10 for x in losses)  # finite
    at_least("modes: bf16 training loss drop, epoch 1 - epoch 2", losses[0] - losses[1], 9e-4)  # it trains
    assert entry["parameters"] > 0


def guide_killed(taught, tiny_bert, monkeypatch, name: str, epochs: int, killed_call: int):
    """A guide-mode run straight through, and the same run interrupted in the ``killed_call``-th training
    epoch (teacher and student epochs alternate: teacher e0, student e0, teacher e1, ...). Returns the
    straight run's metrics and the config of a run name."""
    import kdflow.distillation.teacher_cache as guide_mod  # the guide hook trains the teacher there
    import kdflow.engine.train as train_mod

    def cfg(run):
        c = student_cfg(taught, run, train={"epochs": epochs}, distill={"mode": "guide", "guide_every": 2})
        c["model"]["teacher"]["name"] = tiny_bert
        return c

    straight = kdflow.distill(cfg(f"{name}-straight"))
    real, calls = train_mod.train_epoch, {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == killed_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", dies)
    monkeypatch.setattr(guide_mod, "train_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        kdflow.distill(cfg(f"{name}-killed"))
    monkeypatch.setattr(train_mod, "train_epoch", real)
    monkeypatch.setattr(guide_mod, "train_epoch", real)
    return straight, cfg


def test_guide_resume_trains_on_the_same_targets(taught, tiny_bert, monkeypatch):
    straight, cfg = guide_killed(taught, tiny_bert, monkeypatch, "g", epochs=3, killed_call=4)  # in student e1
    resumed = kdflow.distill(cfg("g-killed"), resume=True)
    assert resumed["distill"]["target_refreshes"] == straight["distill"]["target_refreshes"] == 2
    a = load_file(taught[1] / "g-straight" / "student" / "model.safetensors")
    b = load_file(taught[1] / "g-killed" / "student" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_guide_resume_from_the_previous_checkpoint_uses_its_targets(taught, tiny_bert, monkeypatch):
    """A damaged last/ falls back to previous/, whose copy of the guide targets is put back: killed in
    epoch 5 (targets refreshed there), last/ = epoch 4 damaged, previous/ = epoch 3 trains on epoch 3's targets."""
    straight, cfg = guide_killed(taught, tiny_bert, monkeypatch, "gp", epochs=6, killed_call=10)  # in student e4
    ckpt = taught[1] / "gp-killed" / "checkpoints" / "student"
    assert torch.load(ckpt / "guide_targets.pt", weights_only=True)["epoch"] == 4
    (ckpt / "last" / "model.safetensors").write_bytes(b"")
    resumed = kdflow.distill(cfg("gp-killed"), resume=True)
    assert "resuming from the last good checkpoint" in (taught[1] / "gp-killed" / "log.txt").read_text()
    assert resumed["distill"]["target_refreshes"] == straight["distill"]["target_refreshes"] == 3
    a = load_file(taught[1] / "gp-straight" / "student" / "model.safetensors")
    b = load_file(taught[1] / "gp-killed" / "student" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["validation"] == straight["validation"]


def test_cached_run_trains_exactly_like_a_fresh_one(taught):
    # computing teacher outputs must not shift the RNG the student's dropout draws from
    fresh = kdflow.distill(student_cfg(taught, "rng-fresh", train={"epochs": 1}))
    cached = kdflow.distill(student_cfg(taught, "rng-cached", cache="rng-fresh", train={"epochs": 1}))
    assert fresh["distill"]["teacher_examples_computed"] > 0 and cached["distill"]["teacher_examples_computed"] == 0
    a = load_file(taught[1] / "rng-fresh" / "student" / "model.safetensors")
    b = load_file(taught[1] / "rng-cached" / "student" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_student_with_pruned_vocabulary_distils_and_evaluates(taught):
    entry = kdflow.distill(student_cfg(taught, "pruned", train={"epochs": 2},
                                       model={"student": {"num_layers": 1, "hidden_size": 16, "num_heads": 2,
                                                          "intermediate_size": 32, "prune_vocab": True}}))
    log = (taught[1] / "pruned" / "log.txt").read_text()
    assert "vocabulary pruned to the training text: 30,522 ->" in log
    from kdflow.models import load_saved
    student, tok, _, _ = load_saved(taught[1] / "pruned" / "student")
    assert len(tok) < 200 and student.get_input_embeddings().num_embeddings == len(tok)
    assert entry["compression"] > 20  # the teacher keeps its 30,522-row embedding
    assert kdflow.evaluate(str(taught[1] / "pruned"))["accuracy"] == pytest.approx(entry["test"]["accuracy"])


def test_unlabelled_transfer_set_is_labelled_by_the_teacher_only(taught, tmp_path, intents_json):
    import csv

    from conftest import make_intents
    raw_data = json.loads(open(intents_json).read())
    test_texts = [t for t, _ in raw_data["test"]]
    held = set(test_texts) | {t for t, _ in raw_data["val"]}
    rows = [t for t, _ in make_intents(15, 7)] + test_texts[:3]  # 60 more texts, 3 that leak test inputs
    path = tmp_path / "unlabelled.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerows([[t] for t in rows])
    leaked = sum(t in held for t in rows)
    new = len(rows) - leaked
    assert leaked >= 3 and new > 20
    entry = kdflow.distill(student_cfg(taught, "transfer", train={"epochs": 2},
                                       data={"unlabelled": str(path)}, distill={"alpha": 0.9}))
    log = (taught[1] / "transfer" / "log.txt").read_text()
    assert f"dropped {leaked} texts that are in validation or test" in log
    assert f"student trains on 160 labelled + {new} unlabelled examples" in log
    # the teacher labels train + transfer set once (then the test split for the table)
    assert entry["distill"]["teacher_examples_computed"] == 160 + new + 48
    # teach never sees them: the teacher's data is the labelled train split
    from kdflow.config import DataConfig
    from kdflow.data import load_data
    d = load_data(DataConfig(path=intents_json, max_length=32, unlabelled=str(path), max_unlabelled_examples=10))
    assert len(d.unlabelled) == 10 and (d.unlabelled.targets == -100).all() and len(d.train.labelled) == 160
    joined = d.train + d.unlabelled
    assert list(joined.labelled) == list(range(160))
    with pytest.raises(KdflowError, match="set distill.alpha > 0"):
        kdflow.distill(student_cfg(taught, "transfer0", data={"unlabelled": str(path)}, distill={"alpha": 0.0}))
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence\nhello there\n")
    with pytest.raises(KdflowError, match="Column 'text' is not in"):
        kdflow.distill(student_cfg(taught, "transfer1", data={"unlabelled": str(bad)}, distill={"alpha": 0.9}))


@pytest.mark.parametrize("min_steps, epochs_run", [(0, 2), (12, 3), (100, 8)])
def test_early_stopping_waits_for_min_steps(tmp_path, min_steps, epochs_run):
    """A validation metric that never improves stops training after ``patience`` epochs, but not
    before ``min_steps`` optimizer steps (active learning's small labelled sets start on a plateau)."""
    from kdflow.config import TrainConfig
    from kdflow.engine.runlog import RunLog
    from kdflow.engine.train import FitJob, fit, make_accelerator
    cfg = TrainConfig(epochs=8, lr=1e-2, batch_size=4, patience=1)
    acc = make_accelerator(cfg)
    data = [{"x": torch.randn(4, 3), "y": torch.randint(0, 2, (4,))} for _ in range(5)]  # 5 steps per epoch
    model = torch.nn.Linear(3, 2)

    def loss_fn(m, batch):
        return {"loss": torch.nn.functional.cross_entropy(m(batch["x"]), batch["y"])}
    result = fit(model, loss_fn, torch.utils.data.DataLoader(data, batch_size=None), lambda m: {"accuracy": 0.5},
                 FitJob("t", cfg, tmp_path / "ckpt", min_steps=min_steps), acc, RunLog(tmp_path, acc, quiet=True))
    # epoch 1 is the best (0.5 > -inf); patience 1 stops after epoch 2 unless min_steps asks for more
    assert result.epochs_run == epochs_run and len(result.history) == epochs_run


def test_optimizer_is_fused_adamw_and_steps_as_the_per_parameter_loop():
    import copy

    from kdflow.config import TrainConfig
    from kdflow.engine.train import can_fuse, make_optimizer
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    loop = copy.deepcopy(model)
    opt, _ = make_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.01, warmup_ratio=0.0), 10)
    assert opt.defaults["fused"] is True
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # no decay on biases and norms
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    ref = torch.optim.AdamW([{"params": [loop[0].weight], "weight_decay": 0.01},
                             {"params": [loop[0].bias, *loop[1].parameters()], "weight_decay": 0.0}],
                            lr=1e-2, foreach=False)
    x = torch.randn(8, 4)
    for _ in range(3):
        for m, o in ((model, opt), (loop, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(model.parameters(), loop.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not can_fuse([]) and not can_fuse([torch.zeros(2, dtype=torch.long)])


def test_resume_without_a_checkpoint_is_refused_before_the_teacher_runs(taught, monkeypatch):
    """A run with a teacher and no student checkpoint: --resume says so before any teacher output is computed."""
    import kdflow.distillation.teacher_cache as tc
    from conftest import tree_hash
    cfg = student_cfg(taught, "noresume", train={"epochs": 1})  # the taught teacher, a new run folder
    run = taught[1] / "noresume"
    run.mkdir()
    (run / "notes.txt").write_text("kept")
    before = tree_hash(run, folders=True)
    monkeypatch.setattr(tc, "teacher_logits", lambda *a, **k: pytest.fail("the teacher ran before the refusal"))
    with pytest.raises(KdflowError, match="There is no student checkpoint to resume in"):
        kdflow.distill(cfg, resume=True)
    with pytest.raises(KdflowError, match="There is no teacher checkpoint to resume in"):
        kdflow.teach(cfg, resume=True)
    assert tree_hash(run, folders=True) == before
