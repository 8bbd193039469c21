"""kdflow frontier: the Pareto front on hand-made points, successive halving, the selection rule, and a
whole frontier on a tiny teacher (train, measure, choose, resume, re-select)."""

import json
from pathlib import Path

import pytest
import yaml

from kdflow import api, models
from kdflow.cli import main
from kdflow.errors import KdflowError
from kdflow.deploy.pareto import Budget, dominates, fronts, halve, pareto_front, select

from conftest import tiny_config
from margins import at_least

POINTS = [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9), (2, 0.4), (5, 0.9)]


def test_fronts_of_hand_made_points():
    assert dominates((1, 0.5), (2, 0.4)) and not dominates((1, 0.5), (1, 0.5)) and not dominates((2, 0.7), (1, 0.5))
    assert fronts(POINTS) == [[0, 1, 3], [4, 2, 5]]
    assert pareto_front(POINTS) == [0, 1, 3]
    assert pareto_front([]) == []
    assert pareto_front([(1, 0.5), (1, 0.5)]) == [0, 1]  # equal points do not dominate each other


def test_halving_keeps_the_first_front_and_the_best_of_the_rest():
    named = {f"c{i}": p for i, p in enumerate(POINTS)}
    stop = halve(named, eta=2)  # keep max(ceil(6 / 2), 3 on the first front) = 3
    assert set(stop) == {"c4", "c2", "c5"}
    assert "c0" in stop["c4"] and "front 2" in stop["c4"]
    stop = halve(named, eta=1.5)  # keep ceil(6 / 1.5) = 4: the first front, then the best-scoring of front 2
    assert set(stop) == {"c4", "c2"}
    assert halve({"a": (1, 0.1)}, eta=2) == {}


def test_halving_with_a_target_stops_what_is_costlier_than_a_candidate_meeting_it():
    named = {f"c{i}": p for i, p in enumerate(POINTS)}
    stop = halve(named, eta=10, target=0.65)  # c1 (cost 2) already meets 0.65: c2, c3, c5 cost more
    assert {"c2", "c3", "c5"} <= set(stop) and "c1" in stop["c3"]
    assert "c0" not in stop and "c1" not in stop


def test_selection_rule():
    rows = [{"model": "a", "accuracy": 0.90, "latency_ms_p50": 1.0, "size_mb": 4.0},
            {"model": "b", "accuracy": 0.95, "latency_ms_p50": 2.0, "size_mb": 9.0},
            {"model": "c", "accuracy": 0.96, "latency_ms_p50": 3.0, "size_mb": 8.0},
            {"model": "d", "accuracy": 0.99, "latency_ms_p50": 9.0, "size_mb": 30.0}]
    teacher = 1.0
    assert select(rows, Budget(retention=0.95), "accuracy", teacher) == 2  # b and c meet it; c is smaller
    assert select(rows, Budget(retention=0.95, latency_ms=2.5), "accuracy", teacher) == 1
    assert select(rows, Budget(latency_ms=2.5), "accuracy", teacher) == 1  # the best within 2.5 ms
    assert select(rows, Budget(size_mb=8.5), "accuracy", teacher) == 2
    assert select(rows, Budget(retention=0.995), "accuracy", teacher) is None
    assert Budget(retention=0.99, size_mb=5).describe() == "retention >= 99.0%, size <= 5 MB"


@pytest.fixture(scope="module")
def taught(tiny_bert, intents_json, tmp_path_factory):
    """A tiny teacher trained once; each test copies the config into its own run folder."""
    out = tmp_path_factory.mktemp("frontier")
    # eta 1.01: the rung is kept (its bookkeeping is tested) but stops neither of the 2 candidates, whatever their
    # scores -- which of two tiny students is ahead after one epoch depends on the seed (halving: hand-made points above)
    cfg = tiny_config(tiny_bert, intents_json, out, "frontier",
                      frontier={"depths": [1], "widths": [None, 16], "rungs": [1], "eta": 1.01})
    del cfg["model"]["student"]  # the frontier builds its own students
    api.teach(cfg)
    return cfg


def _write(cfg: dict, tmp_path: Path, name: str) -> str:
    import shutil
    cfg = json.loads(json.dumps(cfg))
    src = Path(cfg["run"]["output_dir"]) / cfg["run"]["name"]
    cfg["run"].update(name=name, output_dir=str(tmp_path))
    shutil.copytree(src / "teacher", tmp_path / name / "teacher")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_frontier_trains_measures_chooses_and_reselects(taught, tmp_path, capsys):
    config = _write(taught, tmp_path, "f")
    assert main(["frontier", config, "--quiet"]) == 0  # no budget yet: no retention target stops a candidate early
    run = tmp_path / "f"
    fr = json.loads((run / "metrics.json").read_text())["frontier"]
    at_least("frontier: best form's validation retention", max(r["retention"] for r in fr["rows"]), 0.5)
    assert "chosen" not in fr and not (run / "student").exists()
    assert main(["frontier", config, "--resume", "--retention", "0.5", "--quiet"]) == 0  # chosen from the measurements
    blob = json.loads((run / "metrics.json").read_text())
    fr = blob["frontier"]
    assert set(fr["candidates"]) == {"L1-H32", "L1-H16"}
    assert all(c["status"] == "trained" for c in fr["candidates"].values())
    assert {r["form"] for r in fr["rows"]} == {"pytorch", "int8", "onnx-int8"} and len(fr["rows"]) == 6
    front = pareto_front([(r["latency_ms_p50"], r["accuracy"]) for r in fr["rows"]])
    assert [i for i, r in enumerate(fr["rows"]) if r["on_front"]] == sorted(front)
    teacher = fr["teacher"]["accuracy"]
    chosen = fr["chosen"]
    ok = [r for r in fr["rows"] if r["accuracy"] >= 0.5 * teacher]
    assert chosen["validation"]["size_mb"] == min(r["size_mb"] for r in ok)
    assert (run / "student" / "config.json").is_file()  # the run's student: export, evaluate work on it
    assert [r["model"] for r in blob["deploy"]][0] == "teacher" and len(blob["deploy"]) == 4  # test, scored once
    assert blob["student"]["chosen_by"].startswith("kdflow frontier")
    assert "Frontier" in (run / "report.md").read_text() and (run / "plots" / "frontier.png").is_file()
    trained_at = (run / "frontier" / "L1-H32" / "model" / "model.safetensors").stat().st_mtime
    # a new budget on the finished frontier: re-selected from the measurements, nothing retrained
    capsys.readouterr()
    assert main(["frontier", config, "--resume", "--latency-ms", "1000"]) == 0
    shown = capsys.readouterr().out  # the front, then the chosen student's test rows beside the teacher's
    assert "Pareto front" in shown and "on test (scored once" in shown and "student saved to" in shown
    again = json.loads((run / "metrics.json").read_text())["frontier"]
    assert again["chosen"]["validation"]["accuracy"] == max(r["accuracy"] for r in fr["rows"])
    assert (run / "frontier" / "L1-H32" / "model" / "model.safetensors").stat().st_mtime == trained_at
    assert main(["frontier", config, "--quiet"]) == 2  # never silently redone
    assert "already holds a frontier" in capsys.readouterr().err
    assert main(["frontier", config, "--resume", "--size-mb", "0.0001", "--quiet"]) == 2  # none meets it (100 bytes)
    assert "No student of the frontier meets size <= 0.0001 MB" in capsys.readouterr().err


def test_frontier_resumes_after_an_interruption(taught, tmp_path, monkeypatch, capsys):
    from kdflow import frontier as fr_mod
    config = _write(taught, tmp_path, "r")
    assert main(["frontier", config, "--resume", "--quiet"]) == 2  # nothing to resume yet: said, not started
    assert "There is no frontier to resume in" in capsys.readouterr().err
    real, calls = fr_mod.Frontier.train, []

    def interrupted(self, name, until):
        calls.append((name, until))
        if len(calls) == 3:  # the first candidate's training past the rung
            raise KeyboardInterrupt
        return real(self, name, until)
    monkeypatch.setattr(fr_mod.Frontier, "train", interrupted)
    assert main(["frontier", config, "--quiet"]) == 130
    state = json.loads((tmp_path / "r" / "frontier" / "state.json").read_text())
    assert state["rung"] == 1 and all(c["status"] == "alive" for c in state["candidates"].values())
    monkeypatch.setattr(fr_mod.Frontier, "train", real)
    assert main(["frontier", config, "--resume", "--quiet"]) == 0
    state = json.loads((tmp_path / "r" / "frontier" / "state.json").read_text())
    assert all(c["status"] == "trained" and c["epochs_run"] == 3 for c in state["candidates"].values())
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "resumed: 0 of 2 candidates trained" in log and "[frontier-L1-H32] resumed from" in log


def test_frontier_with_critical_layers(taught, tmp_path, capsys):
    """distill.intermediate: every candidate also matches teacher layers (through learned projections when
    narrower); what is saved and measured is the plain student, and the setting is part of the resume check."""
    config = _write(taught, tmp_path, "i")
    sets = ["--set", "distill.intermediate=true", "--set", "distill.layers=last:2", "--set", "frontier.forms=[pytorch]"]
    assert main(["frontier", config, "--quiet", "--latency-ms", "1000"] + sets) == 0  # a budget every student meets
    run = tmp_path / "i"
    log = (run / "log.txt").read_text()
    assert "learned projections student->teacher width" in log  # the H16 candidate, narrower than the teacher
    state = json.loads((run / "frontier" / "state.json").read_text())
    assert state["signature"]["intermediate"]["layers"] == "last:2"
    assert all(c["status"] == "trained" for c in state["candidates"].values())
    for name in state["candidates"]:
        model, _, _, _ = models.load_saved(run / "frontier" / name / "model")
        assert not any("projection" in k for k in model.state_dict())  # the student alone, not its wrapper
    capsys.readouterr()
    assert main(["frontier", config, "--resume", "--quiet", "--set", "frontier.forms=[pytorch]"]) == 2  # intermediate off
    assert "intermediate changed" in capsys.readouterr().err


def test_frontier_refuses_what_it_cannot_honour(taught, tmp_path):
    for override, words in [("distill.mode=online", "needs distill.mode offline"),
                            ("frontier.widths=[24]", "multiple of its head width 16"),
                            ("frontier.depths=[2]", "needs fewer blocks than the teacher's 2"),
                            ("frontier.rungs=[3]", "must all be below train.epochs"),
                            ("train.warmup_ratio=0.5", "starts at epoch 1, inside the learning-rate warmup")]:
        config = _write(taught, tmp_path, f"x{override.split('=')[0].replace('.', '-')}")
        with pytest.raises(KdflowError, match=words.replace("(", r"\(")):
            from kdflow.frontier import frontier
            frontier(config, [override])
