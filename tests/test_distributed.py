"""The same command under torchrun: 2 CPU processes (gloo), one teacher cache, one saved student."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

import kdflow

from conftest import tiny_config


def test_torchrun_two_processes(tmp_path, tiny_bert, intents_json):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    raw = tiny_config(tiny_bert, intents_json, tmp_path, "ddp")
    raw["teach"]["epochs"] = 6
    kdflow.teach(raw)
    raw["train"].update(epochs=2)
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "kdflow", "distill", str(cfg)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["student"]
    # one process computed and cached the teacher outputs; validation was gathered over both shards
    assert metrics["distill"]["teacher_examples_computed"] == 160 + 48
    # gathered over both shards, validation equals a single-process evaluation of the saved student
    single = kdflow.evaluate(str(tmp_path / "ddp"), split="validation")
    assert single["examples"] == 48 and metrics["validation"]["accuracy"] == single["accuracy"]
    assert (tmp_path / "ddp" / "student" / "model.safetensors").is_file()
    log = (tmp_path / "ddp" / "log.txt").read_text()
    assert log.count("[student] epoch 1/2") == 1  # only the main process logs
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().strip().splitlines()
    assert sum(r.startswith("student,") for r in rows) == 2
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "student" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 1
