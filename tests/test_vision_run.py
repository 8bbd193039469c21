"""Images end to end through the CLI's main() on real packaged images (scikit-learn's digits): teach, distill
(augmented, online, with FitNets hints and attention transfer on CNN stages), layers, evaluate, export to ONNX,
active; the run folder holds the same records as a text run."""

import json

import numpy as np
import pytest
import yaml

from kdflow.cli import main

from margins import at_least, at_most


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    cfg = {"model": {"teacher": {"kind": "vision", "hidden_sizes": [16, 32], "depths": [1, 1]},
                     "student": {"kind": "vision", "arch": "resnet", "hidden_sizes": [8, 16], "depths": [1, 1]}},
           "data": {"packaged": "digits", "augment": ["crop"], "crop_padding": 1},
           "distill": {"alpha": 0.9, "intermediate": True, "layers": "last:2",
                       "layer_losses": {"hidden": 0.1, "at": 1.0}},
           "teach": {"epochs": 4, "batch_size": 64, "lr": 3e-3},
           "train": {"epochs": 8, "batch_size": 64, "lr": 3e-3},
           "active": {"initial": 200, "per_round": 200, "rounds": 2, "strategy": "margin"},
           "run": {"name": "digits", "output_dir": str(folder), "quiet": True}}
    path = folder / "digits.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["teach", str(path)]) == 0
    assert main(["distill", str(path)]) == 0
    return path, folder / "digits"


def test_teach_and_distill_write_the_records_of_a_text_run(digits_run):
    _, run = digits_run
    metrics = json.loads((run / "metrics.json").read_text())
    teacher, student = metrics["teacher"], metrics["student"]
    at_least("vision: digits teacher test accuracy", teacher["test"]["accuracy"], 0.4)  # 10 classes: chance 0.1
    at_least("vision: digits student test accuracy", student["test"]["accuracy"], 0.25)  # 5,442 parameters, 8 epochs
    assert student["distill"]["mode"] == "online"  # augmented images: the default mode follows
    kinds = {(p["kind"], p["student"], p["teacher"]) for p in student["distill"]["layers"]}
    assert kinds == {("hidden", 0, 0), ("at", 0, 0), ("hidden", 1, 1), ("at", 1, 1)}
    for name in ("report.md", "report.html", "metrics.csv", "config.yaml", "student/kdflow_image.json",
                 "teacher/kdflow_image.json", "student/model.safetensors"):
        assert (run / name).is_file(), name
    rows = (run / "metrics.csv").read_text()
    assert "loss_at_s1_t1" in rows and "loss_hidden_s0_t0" in rows  # every stage term is logged by name
    prep = json.loads((run / "student" / "kdflow_image.json").read_text())
    assert prep["channels"] == 1 and 0.2 < prep["mean"][0] < 0.5  # the digits' own statistics


def test_offline_distillation_of_augmented_images_is_one_sentence(digits_run, capsys):
    path, _ = digits_run
    assert main(["distill", str(path), "--set", "distill.mode=offline", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.augment changes the images every epoch" in err[0]


def test_layers_rank_cnn_stages_and_evaluate_and_export_agree(digits_run, capsys):
    path, run = digits_run
    assert main(["layers", str(path)]) == 0
    scores = json.loads((run / "layers" / "layers.json").read_text())
    assert scores["blocks"] == 2 and scores["drop"] is None and len(scores["probe"]) == 2
    at_least("vision: digits linear probe accuracy, lowest stage", min(scores["probe"]), 0.45)  # chance 0.1
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    evaluated = json.loads(out[out.index("{"):])
    metrics = json.loads((run / "metrics.json").read_text())
    assert evaluated["examples"] == 359  # the fixed 20 % test split of the 1,797 digits
    assert evaluated["accuracy"] == pytest.approx(metrics["student"]["test"]["accuracy"], abs=1e-9)
    assert main(["export", str(run), "--onnx"]) == 0
    deploy = {r["model"]: r for r in json.loads((run / "metrics.json").read_text())["deploy"]}
    at_most("vision: |onnx - pytorch| test accuracy", abs(deploy["student-onnx"]["accuracy"] - deploy["student"]["accuracy"]),
            0.003)
    assert deploy["student"]["accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-9)
    assert (run / "export" / "student.onnx").is_file() or list((run / "export").glob("*.onnx"))


def test_active_learning_on_images_counts_its_labels(digits_run):
    path, run = digits_run
    over = ["--set", "data.augment=[]", "--set", "distill.intermediate=false", "--set", "distill.mode=offline"]
    assert main(["active", str(path), *over]) == 0
    rounds = json.loads((run / "metrics.json").read_text())["active"]["rounds"]
    assert [r["labels"] for r in rounds] == [200, 400]
    assert all(np.isfinite(r["test"]["accuracy"]) for r in rounds)
