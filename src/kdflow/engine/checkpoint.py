"""Checkpoints on disk: written atomically, checked before a resume, the previous one kept.

A role's checkpoint folder (``<run>/checkpoints/<role>/``) holds::

    last/          the newest checkpoint: accelerate's state (model, optimizer, scheduler, RNG),
                   trainer_state.json, files/ (the loose files below, as they were) and manifest.json
    previous/      the checkpoint before it, kept so that a damaged ``last`` can fall back
    best.safetensors, ...   loose files (the best weights, a hook's state such as guide targets)

A save writes ``last.tmp/`` whole, writes ``manifest.json`` (sha256 and size of every file) last,
flushes every file and the folder to disk, then renames ``last`` to ``previous`` and ``last.tmp``
to ``last``: a kill at any moment leaves at least one whole checkpoint. Loose files are written
beside it by a temporary file and a rename, never rewritten in place, so a checkpoint's
``files/`` can hold hard links to them (no copy); a resume puts the chosen checkpoint's copies back.
Only the main process writes; accelerate's ``save_state`` runs on every process as it expects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

from ..errors import KdflowError

STATE = "trainer_state.json"
MANIFEST = "manifest.json"
FILES = "files"  # inside a checkpoint: the loose files of the role's folder at that checkpoint
CANDIDATES = ("last", "previous", "last.old")  # newest first; last.old: written by kdflow before manifests


def file_record(path: Path, sync: bool = False) -> dict:
    """``{"sha256", "size"}`` of ``path``; ``sync`` also flushes it to disk."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
        if sync:
            os.fsync(fh.fileno())
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def check_file(path: Path, record: dict) -> Optional[str]:
    """``None`` when ``path`` has the size and checksum of ``record``; else a clause saying what is wrong."""
    if not path.is_file():
        return f"checkpoint file '{path}' is missing"
    size = path.stat().st_size
    if size != record.get("size"):
        return f"checkpoint file '{path}' is damaged ({size} of its {record.get('size')} bytes)"
    if file_record(path)["sha256"] != record.get("sha256"):
        return f"checkpoint file '{path}' is damaged (its sha256 checksum differs from the one saved with it)"
    return None


def sync_folder(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def save_weights(weights: dict, path: Path) -> dict:
    """``weights`` as safetensors at ``path``, atomically (a temporary file, flushed, then a rename); returns
    the file's record, to check it against later."""
    from safetensors.torch import save_file
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, tmp)
    record = file_record(tmp, sync=True)
    os.replace(tmp, path)
    sync_folder(path.parent)
    return record


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no copy: ``src`` is replaced by a rename, never rewritten), or a copy
    where the file system has no hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_checkpoint(accelerator, ckpt_dir: Path, state: dict) -> None:
    """Write ``last/`` atomically and keep the one before as ``previous/`` (see the module docstring)."""
    last, tmp, previous = ckpt_dir / "last", ckpt_dir / "last.tmp", ckpt_dir / "previous"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        seal(tmp, ckpt_dir, state)
        if last.is_dir():
            shutil.rmtree(previous, ignore_errors=True)
            last.rename(previous)
        tmp.rename(last)
        sync_folder(ckpt_dir)
        shutil.rmtree(ckpt_dir / "last.old", ignore_errors=True)
    accelerator.wait_for_everyone()


def seal(folder: Path, ckpt_dir: Path, state: dict) -> None:
    """Complete a checkpoint written by accelerate: the loose files, the trainer state, then the manifest of
    every file (each flushed to disk on the way), then the folder's entries."""
    (folder / FILES).mkdir(exist_ok=True)
    for loose in sorted(ckpt_dir.iterdir()):
        if loose.is_file() and not loose.name.endswith(".tmp"):
            link_or_copy(loose, folder / FILES / loose.name)
    write_synced(folder / STATE, json.dumps(state))
    records = {p.relative_to(folder).as_posix(): file_record(p, sync=True)
               for p in sorted(folder.rglob("*")) if p.is_file()}
    write_synced(folder / MANIFEST, json.dumps({"format": 1, "files": records}, indent=1))
    sync_folder(folder / FILES)
    sync_folder(folder)


def check_checkpoint(folder: Path) -> tuple[Optional[dict], Optional[str]]:
    """(trainer state, ``None``) of a whole checkpoint, or (``None``, what is damaged). A checkpoint written
    before manifests has nothing to check its files against: it is used as it is."""
    manifest = folder / MANIFEST
    if not manifest.is_file() and (folder / FILES).is_dir():  # written by this version, so sealed: not whole
        return None, f"checkpoint file '{manifest}' is missing"
    if manifest.is_file():
        try:
            records = json.loads(manifest.read_text(encoding="utf-8"))["files"]
            problem = next((p for p in (check_file(folder / name, record) for name, record in records.items())
                            if p is not None), None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, f"checkpoint file '{manifest}' is damaged (not a readable manifest)"
        if problem is not None:
            return None, problem
    path = folder / STATE
    if not path.is_file():
        return None, f"checkpoint file '{path}' is missing"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        int(state["epoch"])
    except (ValueError, KeyError, TypeError):
        return None, f"checkpoint file '{path}' is damaged (not a readable trainer state)"
    return state, None


def has_checkpoint(ckpt_dir: Path) -> bool:
    """Whether ``ckpt_dir`` holds a checkpoint folder to resume (whole or not: :func:`open_checkpoint` says)."""
    return any((ckpt_dir / name).is_dir() for name in CANDIDATES)


def open_checkpoint(ckpt_dir: Path, role: str, log) -> tuple[Path, dict, list]:
    """The newest whole checkpoint of ``ckpt_dir``, its trainer state, and the damaged newer ones (named in
    a warning line of the log). Nothing is changed on disk (:func:`adopt_checkpoint` does that once the
    resume is accepted); none whole left is an error naming the damaged file.
    """
    found = [ckpt_dir / name for name in CANDIDATES if (ckpt_dir / name).is_dir()]
    if not found:
        raise KdflowError(f"There is no {role} checkpoint to resume in '{ckpt_dir}'; drop --resume to start")
    damage, chosen, state = None, None, None
    for folder in found:
        state, problem = check_checkpoint(folder)
        if problem is None:
            chosen = folder
            break
        damage = damage or problem
    if chosen is None:
        raise KdflowError(f"Cannot resume the {role}: {damage}, and no earlier whole checkpoint remains in "
                          f"'{ckpt_dir}'; drop --resume and start again with --overwrite")
    if damage is not None:
        log.info(f"[{role}] warning: {damage}; resuming from the last good checkpoint '{chosen}' "
                 f"(after epoch {int(state['epoch']) + 1}), the damaged one set aside as '<name>.damaged'")
    return chosen, state, found[:found.index(chosen)]


def adopt_checkpoint(ckpt_dir: Path, chosen: Path, damaged: list, accelerator) -> None:
    """Resume from ``chosen``: the ``damaged`` newer ones set aside (``<name>.damaged``, so that no later
    save keeps one as ``previous``) and ``chosen``'s loose files put back."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for bad in damaged:
            aside = bad.with_name(bad.name + ".damaged")
            shutil.rmtree(aside, ignore_errors=True)
            bad.rename(aside)
        restore_files(chosen, ckpt_dir)
    accelerator.wait_for_everyone()


def restore_files(folder: Path, ckpt_dir: Path) -> None:
    """Put the loose files saved with checkpoint ``folder`` back beside it (each by a rename)."""
    if not (folder / FILES).is_dir():
        return
    for saved in sorted((folder / FILES).iterdir()):
        if (ckpt_dir / saved.name).is_file() and os.path.samefile(saved, ckpt_dir / saved.name):
            continue  # already that file (a rename onto a hard link of itself would leave tmp behind)
        tmp = ckpt_dir / (saved.name + ".restore.tmp")
        tmp.unlink(missing_ok=True)
        link_or_copy(saved, tmp)
        os.replace(tmp, ckpt_dir / saved.name)
    sync_folder(ckpt_dir)


__all__ = ["save_checkpoint", "open_checkpoint", "has_checkpoint", "save_weights", "check_file", "file_record",
           "check_checkpoint", "seal", "restore_files", "adopt_checkpoint", "STATE", "MANIFEST", "FILES"]
