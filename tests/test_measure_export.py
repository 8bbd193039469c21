"""Metric values against hand-computed cases; cost fields; ONNX agrees with PyTorch; int8 is smaller."""

import numpy as np
import pytest
import torch

from kdflow import HFSpec
from kdflow.deploy.compare import Contestant, MeasureOptions, compare_models, table
from kdflow.data import TextFeaturizer, load_data
from kdflow.config import DataConfig
from kdflow.deploy.measure import parameter_counts, quality_report
from kdflow.models import build_hf_student, load_hf_classifier, load_tokenizer

from margins import at_most


def test_quality_report_against_hand_computed_values():
    # true:  0 0 0 1 1 2 ; predicted: 0 0 1 1 2 2
    targets = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[pred]
    r = quality_report(logits, targets, "classification", ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    # per class: a P=2/2 R=2/3; b P=1/2 R=1/2; c P=1/2 R=1/1
    assert r["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert r["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    f1 = [0.8, 0.5, 2 / 3]
    assert r["f1_macro"] == pytest.approx(np.mean(f1))
    assert r["f1_weighted"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert r["precision_macro"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert r["recall_macro"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert r["top_confusions"] == [{"true": "b", "predicted": "c", "count": 1},
                                   {"true": "a", "predicted": "b", "count": 1}]
    # MCC by its multiclass definition (Gorodkin 2004) from the confusion matrix
    c, s = 4, 6
    t_k, p_k = np.array([3, 2, 1]), np.array([2, 2, 2])
    mcc = (c * s - t_k @ p_k) / np.sqrt((s ** 2 - p_k @ p_k) * (s ** 2 - t_k @ t_k))
    assert r["mcc"] == pytest.approx(mcc)
    reg = quality_report(np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 3.0, 5.0]), "regression")
    assert reg["mse"] == pytest.approx(2 / 3) and reg["spearman"] == pytest.approx(1.0)
    assert reg["pearson"] == pytest.approx(np.corrcoef([1, 2, 4], [1, 3, 5])[0, 1])


def test_parameter_counts_split_embeddings(tiny_bert):
    m = load_hf_classifier(tiny_bert, ["a", "b"], "classification")
    counts = parameter_counts(m)
    emb = sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n and "LayerNorm" not in n)
    assert counts["embeddings"] == emb and counts["total"] == counts["embeddings"] + counts["non_embedding"]


def test_compare_exports_onnx_and_int8(tiny_bert, intents_json, tmp_path):
    data = load_data(DataConfig(path=intents_json, max_length=32))
    teacher = load_hf_classifier(tiny_bert, data.label_names, "classification")
    spec = HFSpec(num_layers=1, hidden_size=64, num_heads=2, intermediate_size=256)
    student = build_hf_student(spec, teacher, data.label_names, "classification")
    feat = TextFeaturizer(load_tokenizer(tiny_bert), 32)
    rows = compare_models(Contestant("teacher", teacher, feat, 4.0), [Contestant("student", student, feat, 8.0)],
                          data.test, "classification", data.label_names,
                          MeasureOptions(onnx=True, int8=True, latency_examples=8, repeats=1), out_dir=tmp_path)
    names = [r["model"] for r in rows]
    assert names == ["teacher", "student", "student-int8", "student-onnx", "student-onnx-int8"]
    assert not student.training  # exporting left it in eval mode (dropout off)
    by = {r["model"]: r for r in rows}
    for r in rows:
        assert r["latency_ms_p50"] > 0 and r["latency_ms_p95"] >= r["latency_ms_p50"] and r["throughput_per_s"] > 0
        assert r["size_mb"] > 0 and r["examples"] == 48
        # fresh process per form: loading and running a model adds memory; the process holds more
        assert 0 < r["peak_memory_mb"] < r["peak_rss_mb"], r
    # fp32 ONNX reproduces PyTorch; int8 forms stay close and are smaller
    assert by["student-onnx"]["max_abs_diff_vs_student"] < 1e-4
    assert by["student-onnx"]["accuracy"] == by["student"]["accuracy"]
    assert by["student-onnx-int8"]["size_mb"] < by["student-onnx"]["size_mb"] / 2
    assert by["student-int8"]["size_mb"] < (tmp_path / "student.onnx").stat().st_size / 2 ** 20
    assert by["student-int8"]["max_abs_diff_vs_student"] < 0.5
    assert by["student"]["retention"] == pytest.approx(by["student"]["accuracy"] / by["teacher"]["accuracy"]) \
        if by["teacher"]["accuracy"] else True
    assert by["student"]["compression"] == pytest.approx(0.5)  # 4 MB teacher / 8 MB student as given
    text = table(rows)
    assert text.count("\n") == 6 and "student-onnx-int8" in text
    # dynamic axes: a batch and length never seen at export time runs
    from kdflow.deploy.export import ort_runner, ort_session
    run = ort_runner(ort_session(tmp_path / "student.onnx"))
    x = {"input_ids": torch.randint(1000, 2000, (3, 29)), "token_type_ids": torch.zeros(3, 29, dtype=torch.long),
         "attention_mask": torch.ones(3, 29, dtype=torch.long)}
    assert run(x).shape == (3, 4)


def test_export_command_on_a_run(tiny_bert, intents_json, tmp_path):
    import json
    import subprocess
    import sys

    import kdflow
    from conftest import tiny_config
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "exp", teach={"epochs": 2}, train={"epochs": 1})
    raw["model"]["student"]["prune_vocab"] = False  # the whole vocabulary, so export's --prune-vocab has work
    kdflow.teach(raw)
    kdflow.distill(raw)
    out = subprocess.run([sys.executable, "-m", "kdflow", "export", str(tmp_path / "exp"), "--onnx", "--int8",
                          "--prune-vocab", "--prune-heads", "0.5", "--latency-examples", "5", "--repeats", "1",
                          "--no-memory"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "student-heads50-onnx-int8" in out.stdout and "retention" in out.stdout  # the terminal table
    rows = json.loads((tmp_path / "exp" / "metrics.json").read_text())["deploy"]
    forms = ["", "-int8", "-onnx", "-onnx-int8"]
    assert [r["model"] for r in rows] == ["teacher"] + [f"student{f}" for f in forms] + \
        [f"student-pruned{f}" for f in forms] + [f"student-heads50{f}" for f in forms]
    by = {r["model"]: r for r in rows}
    assert "peak_memory_mb" not in by["student"]  # --no-memory
    # half the heads gone: fewer non-embedding parameters, exported forms still agree with it
    assert by["student-heads50"]["parameters_non_embedding"] < by["student"]["parameters_non_embedding"]
    assert by["student-heads50-onnx"]["max_abs_diff_vs_student"] > 0  # compared with the unpruned student
    pruned = json.loads((tmp_path / "exp" / "export" / "student-heads50" / "pruned_heads.json").read_text())
    assert sum(len(v) for v in pruned.values()) >= 1
    assert by["student-pruned"]["size_mb"] < by["student"]["size_mb"] / 5  # 30,522 rows -> the ~100 used
    assert by["student-pruned-onnx"]["max_abs_diff_vs_student"] < 1e-4
    # train-only vocabulary: test words outside it become [UNK], so accuracy may move, and is reported
    at_most("export: |pruned - whole vocabulary| student test accuracy",
            abs(by["student-pruned"]["accuracy"] - by["student"]["accuracy"]), 0.1)
    assert (tmp_path / "exp" / "export" / "student.onnx").is_file()
    assert (tmp_path / "exp" / "export" / "student-int8.onnx").is_file()
    assert rows[1]["compression"] > 1.5  # sizes on disk: the student's weights are smaller
    bad = subprocess.run([sys.executable, "-m", "kdflow", "export", str(tmp_path / "exp")], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "at least one of --onnx, --int8, --prune-vocab and --prune-heads" in bad.stderr
    worse = subprocess.run([sys.executable, "-m", "kdflow", "export", str(tmp_path / "exp"), "--prune-heads", "1.5"],
                           capture_output=True, text=True, timeout=300)
    assert worse.returncode == 2 and "between 0 and 1" in worse.stderr and "Traceback" not in worse.stderr


def test_int8_embeddings_bound_the_error_and_shrink_the_table():
    from kdflow.deploy.export import Int8Embedding, quantize_torch_int8
    torch.manual_seed(0)
    emb = torch.nn.Embedding(500, 48)
    q = Int8Embedding(emb)
    ids = torch.randint(0, 500, (4, 9))
    err = (q(ids) - emb(ids)).abs()
    assert (err <= q.scale[ids].unsqueeze(-1) / 2 + 1e-7).all() and err.max() > 0
    assert q.qweight.dtype == torch.int8 and q.qweight.element_size() * q.qweight.numel() == 500 * 48
    model = torch.nn.Sequential(emb, torch.nn.Linear(48, 3))
    qm = quantize_torch_int8(model)
    assert isinstance(qm[0], Int8Embedding) and isinstance(model[0], torch.nn.Embedding)  # the original is kept
    assert torch.allclose(qm(ids), model(ids), atol=0.05)
