"""Critical-layer distillation end to end on a tiny BERT: every layer map trains, layer scoring,
DKD and multi-teacher KD, and their one-sentence errors."""

import csv
import json

import pytest

import kdflow
from conftest import tiny_config
from margins import at_most
from kdflow.errors import KdflowError


@pytest.fixture(scope="module")
def taught(tiny_bert, intents_json, tmp_path_factory):
    """A fine-tuned 2-block tiny teacher, saved once for every test here."""
    out = tmp_path_factory.mktemp("critical")
    raw = tiny_config(tiny_bert, intents_json, out, "base")
    kdflow.teach(raw)
    return str(out / "base" / "teacher"), out


def _run(taught, intents_json, tiny_bert, name, overwrite=False, **distill):
    teacher, out = taught
    raw = tiny_config(tiny_bert, intents_json, out, name, train={"epochs": 3},
                      model={"teacher": {"name": teacher},
                             "student": {"num_layers": 2, "hidden_size": 16, "num_heads": 2,
                                         "intermediate_size": 32}},
                      distill={"alpha": 0.9, **distill})
    entry = kdflow.distill(raw, overwrite=overwrite)
    rows = [r for r in csv.DictReader(open(out / name / "metrics.csv")) if r["role"] == "student"]
    return entry, rows, out / name


@pytest.mark.parametrize("layers,expected", [
    ("last:2", [(0, 0), (1, 1)]),
    ("uniform", [(0, 0), (1, 1)]),
    ("skip", [(0, 0), (1, 1)]),
    ("last:1", [(1, 1)]),
])
def test_named_layer_maps_train_and_log_every_term(taught, intents_json, tiny_bert, layers, expected):
    name = "map_" + layers.replace(":", "")
    entry, rows, run = _run(taught, intents_json, tiny_bert, name, intermediate=True, layers=layers)
    got = sorted({(p["student"], p["teacher"]) for p in entry["distill"]["layers"]})
    assert got == expected
    assert {p["kind"] for p in entry["distill"]["layers"]} == {"hidden", "attention"}
    for s, t in expected:
        for kind in ("hidden", "attention"):
            values = [float(r[f"loss_{kind}_s{s}_t{t}"]) for r in rows]
            assert all(v >= 0 and v == v for v in values)
        hidden = [float(r[f"loss_hidden_s{s}_t{t}"]) for r in rows]
        at_most(f"critical: {layers} hidden loss s{s}-t{t}, last epoch / first", hidden[-1] / hidden[0], 0.85)
    # 16-wide student vs 32-wide teacher: a learned projection, not saved with the student
    saved = kdflow.models.load_saved(run / "student")[0]
    assert sum(p.numel() for p in saved.parameters()) == entry["parameters"]
    assert entry["distill"]["teacher_calls_in_loop"] > 0  # the teacher runs per batch for its states
    assert 0 <= entry["test"]["accuracy"] <= 1


def test_explicit_map_with_module_paths_and_pkd(taught, intents_json, tiny_bert):
    layers = [{"student": "bert.encoder.layer.1.output", "teacher": "bert.encoder.layer.1.output",
               "kind": "cosine", "weight": 0.5},
              {"student": 0, "teacher": 1, "kind": "pkd", "weight": 2.0}]
    entry, rows, _ = _run(taught, intents_json, tiny_bert, "explicit", intermediate=True, layers=layers)
    names = [k for k in rows[0] if k.startswith("loss_")]
    assert "loss_cosine_sbert.encoder.layer.1.output_tbert.encoder.layer.1.output" in names
    assert "loss_pkd_s0_t1" in names
    first, last = rows[0], rows[-1]
    assert 0 <= float(last["loss_pkd_s0_t1"]) <= 4
    assert float(last["loss_cosine_sbert.encoder.layer.1.output_tbert.encoder.layer.1.output"]) < \
        float(first["loss_cosine_sbert.encoder.layer.1.output_tbert.encoder.layer.1.output"])


def test_auto_layers_score_the_teacher_and_reuse_the_scores(taught, intents_json, tiny_bert):
    entry, _, run = _run(taught, intents_json, tiny_bert, "auto", intermediate=True, layers="auto:1",
                         layer_losses={"hidden": 1.0}, layer_score_examples=40)
    scores = json.loads((run / "layers" / "layers.json").read_text())
    assert scores["blocks"] == 2 and len(scores["drop"]) == 2 and len(scores["probe"]) == 2
    assert all(0 <= p <= 1 for p in scores["probe"])
    best = scores["ranking"][0]
    assert scores["drop"][best] == max(scores["drop"])
    assert [(p["student"], p["teacher"]) for p in entry["distill"]["layers"]] == [(1, best)]
    assert (run / "layers" / "layers.png").stat().st_size > 1000
    log = (run / "log.txt").read_text()
    assert "scoring the teacher's blocks" in log
    # a second distill with the same teacher reads the scores instead of recomputing them
    _run(taught, intents_json, tiny_bert, "auto", overwrite=True, intermediate=True, layers="auto:1",
         layer_losses={"hidden": 1.0}, layer_score_examples=40)
    assert (run / "log.txt").read_text().count("scoring the teacher's blocks") == 1


def test_dkd_and_multi_teacher_run_and_log_their_terms(taught, intents_json, tiny_bert):
    entry, rows, _ = _run(taught, intents_json, tiny_bert, "dkd", logit_loss="dkd", dkd_beta=4.0)
    assert entry["distill"]["logit_loss"] == "dkd" and "loss_tckd" in rows[0] and "loss_nckd" in rows[0]
    teacher, _ = taught
    entry, rows, _ = _run(taught, intents_json, tiny_bert, "multi", extra_teachers=[{"name": teacher,
                                                                                     "weight": 1.0}])
    # the same teacher twice: the averaged targets equal the single teacher's
    assert entry["distill"]["teachers"] == 2
    assert all(abs(float(r["loss_kd"]) - float(r["loss_kd_single"])) < 1e-4 for r in rows)


def test_layer_map_errors_are_one_sentence(taught, intents_json, tiny_bert):
    with pytest.raises(KdflowError, match="layers.*not a layer map"):
        _run(taught, intents_json, tiny_bert, "bad1", intermediate=True, layers="last3")
    with pytest.raises(KdflowError, match="teacher layer 7 does not exist"):
        _run(taught, intents_json, tiny_bert, "bad2", intermediate=True,
             layers=[{"student": 0, "teacher": 7}])
    with pytest.raises(KdflowError, match="no module 'bert.encoder.layer.9'"):
        _run(taught, intents_json, tiny_bert, "bad3", intermediate=True,
             layers=[{"student": "bert.encoder.layer.9", "teacher": 0}])
    with pytest.raises(KdflowError, match="needs distill.mode: offline"):
        _run(taught, intents_json, tiny_bert, "bad4", mode="online", extra_teachers=[{"name": taught[0]}])
    with pytest.raises(KdflowError, match="k must be between 1"):
        _run(taught, intents_json, tiny_bert, "bad5", intermediate=True, layers="last:5")


def test_layers_command_prints_the_ranking(taught, intents_json, tiny_bert, tmp_path):
    import subprocess
    import sys

    import yaml
    teacher, _ = taught
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "cli", model={"teacher": {"name": teacher}})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "-m", "kdflow", "layers", str(tmp_path / "c.yaml"), "--method", "probe",
                          "--examples", "40"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    scores = json.loads((tmp_path / "cli" / "layers" / "layers.json").read_text())
    assert scores["method"] == "probe" and scores["probe"][scores["ranking"][0]] == max(scores["probe"])
    assert "linear-probe accuracy" in out.stdout and "auto:3" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "kdflow", "layers", str(tmp_path / "c.yaml"), "--teacher",
                          str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_student_built_from_the_most_critical_teacher_block(taught, intents_json, tiny_bert):
    teacher, out = taught
    raw = tiny_config(tiny_bert, intents_json, out, "fromteacher", train={"epochs": 1, "lr": 1e-9},
                      model={"teacher": {"name": teacher},
                             "student": {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                                         "init_from_teacher": True, "teacher_layers": "auto", "dropout": 0.0}},
                      distill={"alpha": 0.0, "layer_score_examples": 40})
    kdflow.distill(raw)
    scores = json.loads((out / "fromteacher" / "layers" / "layers.json").read_text())
    best = scores["ranking"][0]
    t = kdflow.models.load_saved(teacher)[0].bert.encoder.layer[best]
    s = kdflow.models.load_saved(out / "fromteacher" / "student")[0].bert.encoder.layer[0]
    # lr 1e-9 for one epoch: the copied block is still (numerically) the teacher's
    assert (s.output.dense.weight - t.output.dense.weight).abs().max() < 1e-5
    assert f"most critical teacher blocks: [{best}]" in (out / "fromteacher" / "log.txt").read_text()
    raw["model"]["student"]["init_from_teacher"] = False
    raw["run"]["name"] = "fromteacher2"
    with pytest.raises(KdflowError, match="needs model.student.init_from_teacher"):
        kdflow.distill(raw)
