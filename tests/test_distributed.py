"""The same commands under torchrun: 2 CPU processes (gloo), one run folder, records beside one process's.

Two processes split each training batch (accelerate) and every pass that only reads a model over many
examples (the teacher's outputs, active learning's pool scoring: ``kdflow.engine.distributed``). The training is
not bit-identical to one process (each process draws half of every batch, gradients are averaged in
another order), so no metric of the two trainings is compared with the other's: that "2 processes train as
well as 1" is a statistical claim, measured over seeds in ``bench/distributed.py`` (BENCHMARKS.md). What is
exact is asserted: each teacher output computed once and gathered equal to one process's row, the data-only
choices (the seed set) equal, every count (outputs computed, labels bought, rounds, rows written), the
gathered validation equal to a one-process evaluation of the same saved model, the files.
"""

import json
import os
import shutil
import subprocess
import sys
from copy import deepcopy

import numpy as np
import pytest
import torch
import yaml

import kdflow
from kdflow.active.outputs import PoolPass, _joined, _share, _stream
from kdflow.data import load_data, make_featurizer

from conftest import seeds_written_out, tiny_config


def torchrun(tmp_path, raw: dict, *command) -> subprocess.CompletedProcess:
    runner = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if runner is None:
        pytest.skip("torchrun is not installed beside this Python")
    cfg = tmp_path / f"{raw['run']['name']}.yaml"
    cfg.write_text(yaml.safe_dump(seeds_written_out(deepcopy(raw))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([runner, "--standalone", "--nproc_per_node=2", "-m", "kdflow", *command, str(cfg), "--quiet"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_bert, intents_json):
    tmp = tmp_path_factory.mktemp("ddp")
    raw = tiny_config(tiny_bert, intents_json, tmp, "teach")
    raw["teach"]["epochs"] = 6
    kdflow.teach(raw)
    raw["model"]["teacher"]["name"] = str(tmp / "teach" / "teacher")
    return tmp, raw


def test_torchrun_distill_two_processes(teacher):
    tmp, base = teacher
    raw = deepcopy(base)
    raw["run"]["name"] = "ddp"
    raw["train"].update(epochs=2)
    raw["distill"] = {"cache_dir": str(tmp / "cache-ddp")}
    torchrun(tmp, raw, "distill")
    metrics = json.loads((tmp / "ddp" / "metrics.json").read_text())["student"]
    # the teacher's outputs were split across the two processes and gathered: each example computed once
    assert metrics["distill"]["teacher_examples_computed"] == 160 + 48
    parts = list((tmp / "cache-ddp").rglob("part-*.pt"))
    assert len(parts) == 2  # train, then test: written by process 0 only
    # gathered over both shards, validation equals a single-process evaluation of the saved student
    single = kdflow.evaluate(str(tmp / "ddp"), split="validation")
    assert single["examples"] == 48 and metrics["validation"]["accuracy"] == single["accuracy"]
    log = (tmp / "ddp" / "log.txt").read_text()
    assert log.count("[student] epoch 1/2") == 1  # only the main process logs
    rows = (tmp / "ddp" / "metrics.csv").read_text().strip().splitlines()
    assert sum(r.startswith("student,") for r in rows) == 2
    state = json.loads((tmp / "ddp" / "checkpoints" / "student" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 1
    one = kdflow.distill({**raw, "run": {**raw["run"], "name": "one"}, "distill": {"cache_dir": str(tmp / "c1")}})
    assert one["distill"]["teacher_examples_computed"] == metrics["distill"]["teacher_examples_computed"]
    # every example's teacher row, gathered from two processes, is the row one process computes for it
    two, single = cached_rows(tmp / "cache-ddp"), cached_rows(tmp / "c1")
    assert set(two) == set(single) and len(two) == 160 + 48
    assert all(torch.allclose(two[k], single[k], atol=1e-5) for k in single)


def cached_rows(root) -> dict:
    rows = {}
    for part in root.rglob("part-*.pt"):
        blob = torch.load(part, weights_only=True)
        rows.update(zip(blob["ids"], blob["logits"]))
    return rows


def test_torchrun_active_two_processes(teacher):
    tmp, base = teacher
    raw = deepcopy(base)
    raw["run"]["name"] = "al-ddp"
    raw["train"].update(lr=2e-2)
    raw["distill"] = {"cache_dir": str(tmp / "cache-al"), "alpha": 0.5}
    raw["active"] = {"strategy": "margin", "oracle": "gold", "initial": 32, "per_round": 16, "rounds": 3,
                     "min_steps": 60}
    torchrun(tmp, raw, "active")
    out = json.loads((tmp / "al-ddp" / "metrics.json").read_text())["active"]
    state = json.loads((tmp / "al-ddp" / "active" / "state.json").read_text())
    assert out["status"] == "done" and len(out["rounds"]) == 3 and out["labels"] == 64
    assert len(state["labels"]) == 64 and len({i for b in state["batches"] for i in b}) == 64  # none twice
    assert (tmp / "al-ddp" / "active" / "student" / "model.safetensors").is_file()
    assert len((tmp / "al-ddp" / "active" / "rounds.csv").read_text().strip().splitlines()) == 4
    log = (tmp / "al-ddp" / "log.txt").read_text()
    assert log.count("[active] batch 1:") == 1
    one = kdflow.active({**raw, "run": {**raw["run"], "name": "al-one"},
                         "distill": {"cache_dir": str(tmp / "cache-al1"), "alpha": 0.5}})
    single = json.loads((tmp / "al-one" / "active" / "state.json").read_text())
    assert one["labels"] == out["labels"] and len(one["rounds"]) == len(out["rounds"])
    assert single["batches"][0] == state["batches"][0]  # the seed set is drawn from the data alone: the same
    assert [len(b) for b in single["batches"]] == [len(b) for b in state["batches"]] == [32, 16, 16]


@pytest.mark.parametrize("strategy,keep_top", [("margin", 0), ("margin", 10), ("badge", 0), ("coreset", 0)])
def test_pool_scored_in_two_shares_and_joined_equals_one_pass(teacher, strategy, keep_top):
    """What two processes send and join (each scoring every other position) equals one process's pass."""
    from kdflow.models import load_saved
    tmp, base = teacher
    model, tok, labels, _ = load_saved(base["model"]["teacher"]["name"])
    pool = load_data(kdflow.load_config(base).data).train
    positions = np.arange(5, len(pool), dtype=np.int64)  # not every position: the rest stay unscored
    spec = PoolPass(strategy, len(labels), batch_size=16, chunk=64, seed=3, keep_top=keep_top,
                    need_embeddings=keep_top > 0)

    def featurize():
        return make_featurizer("text", tok, 32)

    whole = _stream(model, pool, positions, featurize, "cpu", spec)
    sent = [_share(_stream(model, pool, positions[r::2], featurize, "cpu", spec), positions[r::2], spec)
            for r in range(2)]
    joined = _joined(len(pool), sent, spec)
    if keep_top:  # the short list of the 10 best-scored, re-cut from each share's own 10
        assert joined.embedding_rows.tolist() == whole.embedding_rows.tolist() and len(whole.embedding_rows) == 10
        np.testing.assert_allclose(joined.embeddings, whole.embeddings, rtol=1e-5, atol=1e-6)
    for key in ("scores", "probs", "embeddings" if not keep_top else "scores"):
        a, b = getattr(whole, key), getattr(joined, key)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a[positions], b[positions], rtol=1e-5, atol=1e-6)
