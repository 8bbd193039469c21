"""A command that fails leaves the run folder exactly as it found it (hashed before and after), and
--overwrite discards the earlier output only once the new command succeeds."""


import pytest
import yaml

import kdflow
from kdflow.cli import main
from kdflow.errors import KdflowError
from kdflow.engine.runfolder import Snapshot, discard, kept

from conftest import tiny_config, tree_hash


def folder_hash(root) -> dict[str, str]:
    return tree_hash(root, folders=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert, intents_json):
    """A run folder holding a taught teacher and a distilled student, and its config file."""
    tmp = tmp_path_factory.mktemp("kept")
    raw = tiny_config(tiny_bert, intents_json, tmp, "done", teach={"epochs": 2}, train={"epochs": 2})
    kdflow.teach(raw)
    kdflow.distill(raw)
    path = tmp / "done.yaml"
    path.write_text(yaml.safe_dump(raw))
    return tmp / "done", str(path)


REFUSED = {
    "a resume with other settings": ["distill", "{cfg}", "--resume", "--set", "train.epochs=5"],
    "a rejected --set": ["distill", "{cfg}", "--set", "train.lr=fast"],
    "an unknown --set key": ["teach", "{cfg}", "--resume", "--set", "teach.epoch=3"],
    "a second run without --resume": ["distill", "{cfg}"],
    "--resume with --overwrite": ["teach", "{cfg}", "--resume", "--overwrite"],
    "a teacher resume with other settings": ["teach", "{cfg}", "--resume", "--set", "teach.batch_size=8"],
    "an active resume with nothing to resume": ["active", "{cfg}", "--resume"],
    "an overwrite whose student cannot be built": ["distill", "{cfg}", "--overwrite", "--set",
                                                    "model.student.teacher_layers=[5]"],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_refused_command_leaves_the_run_folder_exactly_as_it_was(finished, case, capsys):
    run, cfg = finished
    before = folder_hash(run)
    argv = [a.format(cfg=cfg) for a in REFUSED[case]] + ["--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdflow: error: ") and "Traceback" not in err[0]
    assert folder_hash(run) == before, f"{case} changed the run folder"
    assert not (run / ".discarded").exists()


def test_a_failed_first_command_leaves_no_folder_and_progress_is_kept(tmp_path):
    root = tmp_path / "fresh"
    with pytest.raises(KdflowError), kept(root):
        root.mkdir()
        (root / "config.yaml").write_text("x")
        raise KdflowError("refused")
    assert not root.exists()
    with pytest.raises(KdflowError), kept(root):  # loose files alone are no finished work: put back
        (root / "checkpoints" / "student").mkdir(parents=True)
        (root / "checkpoints" / "student" / "guide_targets.pt").write_text("targets")
        raise KdflowError("NaN in epoch 1")
    assert not root.exists()
    with pytest.raises(KdflowError), kept(root):  # a finished epoch is work: the folder stays for --resume
        (root / "checkpoints" / "student").mkdir(parents=True)
        (root / "checkpoints" / "student" / "guide_targets.pt").write_text("targets")  # not finished work
        (root / "checkpoints" / "student" / "trainer_state.json").write_text("epoch 1")  # a sealed epoch is
        (root / "log.txt").write_text("epoch 1 done")
        raise KdflowError("NaN in epoch 2")
    assert (root / "checkpoints" / "student" / "trainer_state.json").read_text() == "epoch 1"
    assert (root / "log.txt").is_file()


def test_overwrite_moves_aside_and_brings_back_on_failure_or_deletes_on_success(tmp_path):
    root = tmp_path / "run"
    (root / "student").mkdir(parents=True)
    (root / "student" / "model.safetensors").write_bytes(b"old weights")
    (root / "metrics.json").write_text('{"student": 1}')
    before = folder_hash(root)
    with pytest.raises(KdflowError), kept(root):
        discard(root / "student", root)
        assert not (root / "student").exists()
        (root / "metrics.json").write_text("{}")
        (root / "new.txt").write_text("new")
        raise KdflowError("failed")
    assert folder_hash(root) == before
    with kept(root) as snap:
        discard(root / "student", root)
        (root / "student").mkdir()
        (root / "student" / "model.safetensors").write_bytes(b"new weights")
    assert (root / "student" / "model.safetensors").read_bytes() == b"new weights"
    assert not (root / ".discarded").exists() and isinstance(snap, Snapshot)
    discard(root / "student", root)  # outside a command: deleted at once
    assert not (root / "student").exists()
