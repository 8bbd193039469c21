"""Crashes and checkpoints: real ``kill -9`` of ``python -m kdflow`` (teach, distill offline / online /
guide, active, frontier) at several points, then ``--resume`` ends where an uninterrupted run ends
(same weights, same quality numbers); a damaged checkpoint falls back to the previous one; a NaN loss
stops the run naming the step; the checkpoint files themselves (manifest, legacy, bad JSON)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kdflow import KdflowError
from kdflow.engine.checkpoint import check_checkpoint, check_file

from conftest import tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------ running and killing real processes

def launch(command: str, cfg: dict, *extra: str) -> subprocess.Popen:
    """``python -m kdflow COMMAND CONFIG --quiet`` in the background (stderr kept in a file beside the run)."""
    out = Path(cfg["run"]["output_dir"])
    path = out / f"{cfg['run']['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "kdflow", command, str(path), "--quiet", *extra], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(path.with_suffix(".stderr"), "ab"))
    proc.stderr_file = path.with_suffix(".stderr")
    return proc


def finish(proc: subprocess.Popen) -> None:
    assert proc.wait(timeout=600) == 0, proc.stderr_file.read_text()[-3000:]


def kill_when(proc: subprocess.Popen, ready, after: float = 0.0) -> None:
    """SIGKILL ``proc`` once ``ready()`` holds (polled every 2 ms), ``after`` seconds later."""
    deadline = time.monotonic() + 600
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the kill point: "
                        + proc.stderr_file.read_text()[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the kill point never came")
        time.sleep(0.002)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed, not finished


def saved_epoch(ckpt: Path) -> int:
    """The last finished epoch of ``ckpt/last`` (-1 while there is none)."""
    try:
        return json.loads((ckpt / "last" / "trainer_state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


def read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    assert all(torch.equal(x[k], y[k]) for k in x), f"{a} and {b} differ"


def quality(run: Path, role: str) -> dict:
    """The numbers of ``metrics.json[role]`` that a resumed run must reproduce (no timings)."""
    entry = json.loads((run / "metrics.json").read_text())[role]
    return {k: entry.get(k) for k in ("validation", "test", "teacher_test", "best_epoch", "epochs_run")}


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_bert, intents_json):
    """One uninterrupted ``kdflow teach`` subprocess: the reference of the teach test, the teacher of the rest."""
    out = tmp_path_factory.mktemp("crash")
    raw = tiny_config(tiny_bert, intents_json, out, "teach", teach={"epochs": 4, "deterministic": True})
    finish(launch("teach", raw))
    return raw, out


def student_cfg(base, name: str, **sections) -> dict:
    raw, out = base
    cfg = deepcopy(raw)
    cfg["run"]["name"] = name
    cfg["model"]["teacher"]["name"] = str(out / "teach" / "teacher")
    cfg["distill"] = {"cache_dir": str(out / f"cache-{name}")}
    cfg["train"]["epochs"] = 4
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


# ------------------------------------------------------------------ kill -9, then --resume

def test_teach_killed_during_a_checkpoint_save_resumes_to_the_same_teacher(base):
    raw, out = base
    cfg = deepcopy(raw)
    cfg["run"]["name"] = "teach-killed"
    ckpt = out / "teach-killed" / "checkpoints" / "teacher"
    # the second save or a later one is under way: last.tmp is being written beside a whole last/
    kill_when(launch("teach", cfg), lambda: (ckpt / "last.tmp").is_dir() and (ckpt / "last").is_dir())
    finish(launch("teach", cfg, "--resume"))
    assert "resumed from" in read(out / "teach-killed" / "log.txt")
    same_weights(out / "teach" / "teacher" / "model.safetensors",
                 out / "teach-killed" / "teacher" / "model.safetensors")
    assert quality(out / "teach-killed", "teacher") == quality(out / "teach", "teacher")


def test_offline_distill_killed_twice_with_a_damaged_checkpoint_between(base):
    """Killed after epoch 2 -> a file of last/ truncated -> the resume falls back to previous/ (warning naming
    the file) and is killed inside an epoch -> the second resume ends where an uninterrupted run ends."""
    _, out = base
    reference = launch("distill", student_cfg(base, "off-ref", train={"epochs": 5}))
    cfg = student_cfg(base, "off", train={"epochs": 5})
    run, ckpt = out / "off", out / "off" / "checkpoints" / "student"
    kill_when(launch("distill", cfg), lambda: saved_epoch(ckpt) >= 1)
    assert (ckpt / "previous" / "manifest.json").is_file() and (ckpt / "last" / "manifest.json").is_file()
    damaged = ckpt / "last" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    warning = f"warning: checkpoint file '{damaged}' is damaged (100 of its"
    # killed again once the resumed run saved its first epoch (the log's "resumed from" line comes after the
    # damaged folder is set aside, so last/ is then the new one), a moment into the next epoch
    kill_when(launch("distill", cfg, "--resume"), lambda: "resumed from" in read(run / "log.txt")
              and saved_epoch(ckpt) >= 1, after=0.02)
    log = read(run / "log.txt")
    assert warning in log and f"resuming from the last good checkpoint '{ckpt / 'previous'}' (after epoch" in log
    assert f"resumed from {ckpt / 'previous'} after epoch" in log
    assert (ckpt / "last.damaged").is_dir()  # set aside: never kept as previous/ by a later save
    finish(launch("distill", cfg, "--resume"))
    assert read(run / "log.txt").count("resumed from") == 2
    assert not list(ckpt.glob("*.tmp"))
    finish(reference)
    same_weights(out / "off-ref" / "student" / "model.safetensors", run / "student" / "model.safetensors")
    assert quality(run, "student") == quality(out / "off-ref", "student")


@pytest.mark.parametrize("mode", ["online", "guide"])
def test_online_and_guide_distill_killed_inside_an_epoch_resume_to_the_same_student(base, tiny_bert, mode):
    _, out = base

    def cfg(name):
        c = student_cfg(base, name, distill={"mode": mode, "guide_every": 2})
        if mode == "guide":  # the guide teacher starts untrained and learns beside the student
            c["model"]["teacher"]["name"] = tiny_bert
        return c
    reference = launch("distill", cfg(f"{mode}-ref"))
    ckpt = out / mode / "checkpoints" / "student"
    kill_when(launch("distill", cfg(mode)), lambda: saved_epoch(ckpt) >= 0, after=0.05)
    finish(launch("distill", cfg(mode), "--resume"))
    finish(reference)
    same_weights(out / f"{mode}-ref" / "student" / "model.safetensors", out / mode / "student" / "model.safetensors")
    assert quality(out / mode, "student") == quality(out / f"{mode}-ref", "student")
    refreshes = [json.loads((out / r / "metrics.json").read_text())["student"]["distill"]["target_refreshes"]
                 for r in (mode, f"{mode}-ref")]
    assert refreshes[0] == refreshes[1]


def test_active_killed_inside_a_round_resumes_to_the_same_student(base):
    _, out = base

    def cfg(name):
        c = student_cfg(base, name, active={"initial": 8, "per_round": 8, "rounds": 2, "min_steps": 8,
                                            "strategy": "margin"})
        c["distill"]["alpha"] = 0.5
        c["train"].update(lr=2e-2, epochs=3)
        return c
    reference = launch("active", cfg("al-ref"))
    folder = out / "al" / "active"

    def in_round_two() -> bool:
        try:
            rounds = len(json.loads((folder / "state.json").read_text())["rounds"])
        except (OSError, ValueError, KeyError):
            return False
        return rounds >= 1 and saved_epoch(folder / "checkpoints") >= 1
    kill_when(launch("active", cfg("al")), in_round_two)
    finish(launch("active", cfg("al"), "--resume"))
    finish(reference)
    same_weights(out / "al-ref" / "active" / "student" / "model.safetensors", folder / "student" / "model.safetensors")
    a, b = (json.loads((out / r / "active" / "state.json").read_text()) for r in ("al", "al-ref"))
    assert a["batches"] == b["batches"] and len(a["rounds"]) == len(b["rounds"]) == 2
    for x, y in zip(a["rounds"], b["rounds"]):
        assert (x["validation"], x["test"], x["epochs_run"]) == (y["validation"], y["test"], y["epochs_run"])


def test_frontier_killed_while_a_candidate_trains_resumes_to_the_same_front(base):
    _, out = base

    def cfg(name):
        c = student_cfg(base, name, frontier={"depths": [1], "widths": [None, 16], "rungs": [1],
                                              "forms": ["pytorch"]})
        del c["model"]["student"]
        c["train"]["epochs"] = 3
        return c
    reference = launch("frontier", cfg("fr-ref"))
    folder = out / "fr" / "frontier"
    # past the rung (epoch 1), a candidate trains on to the end
    kill_when(launch("frontier", cfg("fr")), lambda: any(saved_epoch(c) >= 1 for c in folder.glob("*/checkpoints")),
              after=0.02)
    finish(launch("frontier", cfg("fr"), "--resume"))
    finish(reference)
    a, b = (json.loads((out / r / "metrics.json").read_text())["frontier"] for r in ("fr", "fr-ref"))
    keys = ("status", "scores", "best_epoch", "epochs_run", "parameters")
    assert {n: [c.get(k) for k in keys] for n, c in a["candidates"].items()} == \
        {n: [c.get(k) for k in keys] for n, c in b["candidates"].items()}
    assert [r["accuracy"] for r in a["rows"]] == [r["accuracy"] for r in b["rows"]]
    for name, c in a["candidates"].items():
        if c["status"] == "trained":
            same_weights(out / "fr-ref" / "frontier" / name / "model" / "model.safetensors",
                         folder / name / "model" / "model.safetensors")


# ------------------------------------------------------------------ a NaN loss, in process

def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(base, monkeypatch, capsys):
    from kdflow.cli import main
    from kdflow.distillation.distiller import Distiller
    _, out = base
    real, seen = Distiller.__call__, []

    def poisoned(self, student, batch):  # the 13th step: epoch 2, step 3 of 10 (160 examples, batch 16)
        terms = real(self, student, batch)
        seen.append(batch["ids"])
        if len(seen) == 13:
            terms = {**terms, "loss": terms["loss"] * float("nan")}
        return terms
    monkeypatch.setattr(Distiller, "__call__", poisoned)
    cfg = student_cfg(base, "nan", train={"epochs": 3})
    path = out / "nan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err = next(line for line in err.splitlines() if line.startswith("kdflow: error: "))
    assert "The student's training loss became nan at optimizer step 13 (epoch 2, step 3 of 10)" in err
    assert f"on examples {', '.join(seen[12][:8])} (and 8 more)" in err
    assert "loss terms loss nan, loss_kd " in err and ", loss_hard " in err
    ckpt = out / "nan" / "checkpoints" / "student"
    assert f"the checkpoint after epoch 1 in '{ckpt / 'last'}' is kept" in err and "--resume" in err
    state, problem = check_checkpoint(ckpt / "last")
    assert problem is None and state["epoch"] == 0  # nothing of epoch 2 was saved
    assert check_file(ckpt / "best.safetensors", state["best_file"]) is None
    assert not (out / "nan" / "student").exists()


# ------------------------------------------------------------------ the checkpoint files, on a tiny fit

def tiny_fit(tmp_path, resume=False, stop_after=None, scores=(0.1, 0.2, 0.3, 0.4), loss_hook=None):
    """A linear model, 5 steps an epoch, 4 epochs; ``scores``: the validation metric of each epoch (by
    default each epoch is the best so far); ``loss_hook(step)`` runs before each step's loss and may return
    a factor for it."""
    from kdflow.config import TrainConfig
    from kdflow.engine.runlog import RunLog
    from kdflow.engine.train import FitJob, fit, make_accelerator
    cfg = TrainConfig(epochs=4, lr=1e-2, batch_size=4, patience=None, deterministic=True)
    acc = make_accelerator(cfg)
    gen = torch.Generator().manual_seed(0)
    data = [{"x": torch.randn(4, 3, generator=gen), "y": torch.randint(0, 2, (4,), generator=gen),
             "ids": [f"ex{4 * i + j}" for j in range(4)]} for i in range(5)]
    model = torch.nn.Linear(3, 2)
    steps, epoch = [], [None]

    def loss_fn(m, batch):
        steps.append(1)
        scale = loss_hook(len(steps)) if loss_hook is not None else None
        loss = torch.nn.functional.cross_entropy(m(batch["x"]), batch["y"])
        return {"loss": loss if scale is None else loss * scale}

    job = FitJob("t", cfg, tmp_path / "ckpt", resume=resume, stop_after=stop_after,
                 on_epoch_start=lambda e: epoch.__setitem__(0, e))
    result = fit(model, loss_fn, torch.utils.data.DataLoader(data, batch_size=None),
                 lambda m: {"accuracy": scores[epoch[0]]}, job, acc, RunLog(tmp_path, acc, quiet=True))
    return result, {k: v.clone() for k, v in model.state_dict().items()}


def test_checkpoint_layout_manifest_and_previous(tmp_path):
    whole, weights = tiny_fit(tmp_path / "a")
    ckpt = tmp_path / "a" / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.safetensors", "last", "previous"]
    manifest = json.loads((ckpt / "last" / "manifest.json").read_text())["files"]
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "trainer_state.json", "random_states_0.pkl",
            "files/best.safetensors"} <= set(manifest)
    last, problem = check_checkpoint(ckpt / "last")
    previous, _ = check_checkpoint(ckpt / "previous")
    assert problem is None and (last["epoch"], previous["epoch"]) == (3, 2)
    assert check_file(ckpt / "best.safetensors", last["best_file"]) is None
    # best.safetensors replaced by garbage after the run: the resume puts the checkpoint's copy back
    best = (ckpt / "best.safetensors").read_bytes()
    (ckpt / "best.safetensors").unlink()
    (ckpt / "best.safetensors").write_bytes(b"\0" * len(best))
    again, resumed = tiny_fit(tmp_path / "a", resume=True)
    assert (ckpt / "best.safetensors").read_bytes() == best
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)
    # damaged in place (the hard link in last/files/ with it): last/ is damaged, previous/ (epoch 3) replays epoch 4
    (ckpt / "best.safetensors").write_bytes(b"\0" * len(best))
    again, resumed = tiny_fit(tmp_path / "a", resume=True)
    log = (tmp_path / "a" / "log.txt").read_text()
    assert f"warning: checkpoint file '{ckpt / 'last' / 'files' / 'best.safetensors'}' is damaged (its sha256" in log
    assert again.best_epoch == whole.best_epoch == 3 and all(torch.equal(weights[k], resumed[k]) for k in weights)
    assert (ckpt / "best.safetensors").read_bytes() == best


def test_checkpoint_written_before_manifests_still_resumes(tmp_path):
    """A checkpoint without manifest.json and files/ (kdflow before this format) is used as it is."""
    import shutil
    _, whole = tiny_fit(tmp_path / "whole")
    tiny_fit(tmp_path / "old", stop_after=2)
    ckpt = tmp_path / "old" / "ckpt"
    (ckpt / "last" / "manifest.json").unlink()
    shutil.rmtree(ckpt / "last" / "files")
    shutil.rmtree(ckpt / "previous")
    result, resumed = tiny_fit(tmp_path / "old", resume=True)
    assert result.epochs_run == 4 and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert "resumed from" in (tmp_path / "old" / "log.txt").read_text()


def test_unreadable_trainer_state_is_one_sentence(tmp_path):
    tiny_fit(tmp_path, stop_after=1)
    ckpt = tmp_path / "ckpt"
    (ckpt / "last" / "trainer_state.json").write_text('{"epoch": 0, "hist')
    with pytest.raises(KdflowError, match=r"Cannot resume the t: checkpoint file '.*last/trainer_state.json' is "
                                          r"damaged \(18 of its \d+ bytes\), and no earlier whole checkpoint "
                                          r"remains in .*; drop --resume and start again with --overwrite$"):
        tiny_fit(tmp_path, resume=True)
    (ckpt / "last" / "manifest.json").unlink()  # a checkpoint of this version without its seal: not whole
    with pytest.raises(KdflowError, match="manifest.json' is missing, and no earlier whole checkpoint"):
        tiny_fit(tmp_path, resume=True)
    import shutil
    shutil.rmtree(ckpt / "last" / "files")  # the layout before manifests: unverified, the JSON itself fails
    with pytest.raises(KdflowError, match="trainer_state.json' is damaged \\(not a readable trainer state\\)"):
        tiny_fit(tmp_path, resume=True)
    shutil.rmtree(ckpt / "last")
    with pytest.raises(KdflowError, match="There is no t checkpoint to resume"):
        tiny_fit(tmp_path, resume=True)


def test_nan_validation_metric_is_never_the_best(tmp_path):
    result, _ = tiny_fit(tmp_path / "a", scores=[math.nan, 0.5, math.nan, 0.4])
    assert result.best_epoch == 1 and result.best_metric == 0.5
    result, _ = tiny_fit(tmp_path / "b", scores=[math.nan] * 4)
    assert result.best_epoch == -1 and not (tmp_path / "b" / "ckpt" / "best.safetensors").exists()


def test_out_of_gpu_memory_is_one_sentence(tmp_path):
    def oom(step):
        if step == 7:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(KdflowError, match=r"^The t ran out of GPU memory in epoch 2 at train.batch_size 4; lower "
                                          r"train.batch_size"):
        tiny_fit(tmp_path, loss_hook=oom)
    state, problem = check_checkpoint(tmp_path / "ckpt" / "last")
    assert problem is None and state["epoch"] == 0


def test_infinite_loss_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path):
    with pytest.raises(KdflowError, match=r"^The t's training loss became inf at optimizer step 2 \(epoch 1, step 2 "
                                          r"of 5\) on examples ex4, ex5, ex6, ex7, loss terms loss inf; nothing of "
                                          r"this epoch was saved, and no checkpoint of this t was written yet: "
                                          r"lower train.lr or set train.max_grad_norm and run the command again "
                                          r"\(with --resume where"):
        tiny_fit(tmp_path, loss_hook=lambda step: float("inf") if step == 2 else None)
    assert not (tmp_path / "ckpt").exists()
