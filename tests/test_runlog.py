"""The one writer of a run folder's records: metrics.json entries replaced whole, others kept; rows per epoch."""

import csv
import json
from types import SimpleNamespace

from kdflow.engine.runlog import RunLog, read_metrics, update_metrics


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


def test_metrics_json_stays_valid_json_when_a_number_is_not_finite(tmp_path):
    import math

    import numpy as np
    update_metrics(tmp_path, {"student": {"test": {"pearson": float("nan"), "mse": float("inf"), "n": 3,
                                                   "spearman": np.float64("-inf"), "ok": np.float32(0.5)},
                                          "curve": [1.0, float("nan")]}})
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text

    def refuse(token):
        raise AssertionError(f"metrics.json holds {token}")
    blob = json.loads(text, parse_constant=refuse)  # strict JSON: what every other language reads
    assert blob["student"]["test"] == {"pearson": None, "mse": None, "n": 3, "spearman": None, "ok": 0.5}
    assert blob["student"]["curve"] == [1.0, None]
    from kdflow.diagnose.report import read_records
    back = read_records(tmp_path)[0]  # the report reads a metric's null back as NaN
    assert math.isnan(back["student"]["test"]["pearson"]) and back["student"]["test"]["n"] == 3


def test_damaged_records_are_refused_before_any_work(tmp_path):
    import pytest

    from kdflow.errors import KdflowError
    (tmp_path / "metrics.json").write_text('{"teacher": {"test": ')
    with pytest.raises(KdflowError, match="metrics.json' is not valid JSON .*line 1.*repair it, or move it away"):
        RunLog(tmp_path, SimpleNamespace(is_main_process=True), quiet=True)
    (tmp_path / "metrics.json").write_text("[]")
    with pytest.raises(KdflowError, match="holds a list where an object"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").unlink()
    log = RunLog(tmp_path, SimpleNamespace(is_main_process=True), quiet=True)
    (tmp_path / "metrics.csv").write_text("role,epoch,loss\nteacher,0,0.5\nteacher,one,0.4\n")
    with pytest.raises(KdflowError, match="Line 3 of .*metrics.csv' is not a row"):
        log.epoch("teacher", 1, {"loss": 0.3})
    assert (tmp_path / "metrics.csv").read_text().endswith("teacher,one,0.4\n")  # left as it was
