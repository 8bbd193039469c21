"""The one writer of a run folder's records: metrics.json entries replaced whole, others kept; rows per epoch."""

import csv
import json
from types import SimpleNamespace

from kdflow.runlog import RunLog, read_metrics, update_metrics


def test_metrics_json_entries_are_set_and_dropped_without_touching_the_others(tmp_path):
    assert read_metrics(tmp_path) == {}
    update_metrics(tmp_path, {"teacher": {"test": {"accuracy": 0.9}}})
    update_metrics(tmp_path, {"student": {"test": {"accuracy": 0.8}}, "deploy": [{"model": "teacher"}]})
    update_metrics(tmp_path, {"student": {"test": {"accuracy": 0.85}}})
    assert read_metrics(tmp_path) == {"teacher": {"test": {"accuracy": 0.9}}, "student": {"test": {"accuracy": 0.85}},
                                      "deploy": [{"model": "teacher"}]}
    update_metrics(tmp_path, {}, drop={"student", "deploy"})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"teacher": {"test": {"accuracy": 0.9}}}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


def test_epoch_rows_replace_a_rerun_epoch_and_drop_rows_forgets_a_role(tmp_path):
    log = RunLog(tmp_path, SimpleNamespace(is_main_process=True), quiet=True)
    log.epoch("teacher", 0, {"loss": 1.0})
    log.epoch("student", 0, {"loss": 2.0, "loss_kd": 0.5})
    log.epoch("student", 0, {"loss": 1.5, "loss_kd": 0.4})  # a resumed run redoes epoch 0
    log.final("student", {"parameters": 3})
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["role"], r["loss"]) for r in rows] == [("teacher", "1.0"), ("student", "1.5")]
    RunLog.drop_rows(tmp_path, {"student"})
    assert [r["role"] for r in csv.DictReader(open(tmp_path / "metrics.csv"))] == ["teacher"]
    assert "student" not in read_metrics(tmp_path)
