"""A command that fails leaves its run folder as it found it.

``config.yaml``, ``metrics.json`` and the rest are the record that ``evaluate``, ``export`` and ``report``
read later: a refused ``--resume``, a student that cannot be built, a loss that turns NaN before the first
epoch ends must not rewrite it. :func:`kept` snapshots the folder before a command and, when the command
raises, puts back every record file it changed and removes everything it created. What ``--overwrite``
discards is moved aside (:func:`discard`) and deleted only when the command succeeds.

Work that would cost time to redo is kept: once the command has sealed a checkpoint (an epoch) or saved an
active-learning or frontier state (a round, a candidate) the folder stays as it is, so ``--resume`` goes
on from there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Iterator

from ..errors import KdflowError
from .checkpoint import has_checkpoint
from .distributed import is_main
from .runlog import RunLog

PROGRESS = ("checkpoints", "active", "frontier")  # where an interrupted command's finished work lives
# the files that mark finished work there: a sealed checkpoint, a saved active-learning or frontier state
MARKERS = ("trainer_state.json", "manifest.json", "state.json")
RECORD_SUFFIXES = {".json", ".csv", ".yaml", ".yml", ".md", ".html", ".txt", ".png"}
RECORD_LIMIT = 32 * 2 ** 20  # a record file up to this size is kept in memory while a command runs
RECORDS_TOTAL = 256 * 2 ** 20  # and all of them together up to this
ASIDE = ".discarded"  # what --overwrite moves aside until the command succeeds

_active: dict[Path, "Snapshot"] = {}


class Snapshot:
    """The files of ``root`` (size and modification time), the small ones' bytes, and what was set aside."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.existed = self.root.is_dir()
        self.files = self._listing()
        self.dirs = {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_dir()} \
            if self.existed else set()
        self.saved: dict[str, bytes] = {}  # the records (config, metrics, log, report), not models or checkpoints
        total = 0
        for rel, (size, _) in sorted(self.files.items(), key=lambda item: item[1][0]):
            if Path(rel).suffix in RECORD_SUFFIXES and size <= RECORD_LIMIT and not rel.startswith(PROGRESS) \
                    and total + size <= RECORDS_TOTAL:
                self.saved[rel] = (self.root / rel).read_bytes()
                total += size
        self.aside: list[tuple[Path, Path]] = []  # (where it was, where it waits)

    def _listing(self) -> dict[str, tuple[int, int]]:
        if not self.root.is_dir():
            return {}
        out = {}
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.is_symlink() and not rel.startswith(ASIDE):
                st = path.stat()
                out[rel] = (st.st_size, st.st_mtime_ns)
        return out

    def progressed(self) -> bool:
        """Whether the command wrote finished work (a checkpoint, a round, a candidate)."""
        now = self._listing()
        return any(rel.startswith(PROGRESS) and Path(rel).name in MARKERS and self.files.get(rel) != stat
                   for rel, stat in now.items())

    def restore(self) -> None:
        """Put the folder back as it was: records rewritten, new files removed, set-aside folders returned."""
        if not self.existed:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for rel in self._listing():
            if rel not in self.files:
                (self.root / rel).unlink(missing_ok=True)
        for rel, data in self.saved.items():
            path = self.root / rel
            if not path.is_file() or path.read_bytes() != data:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                os.utime(path, ns=(self.files[rel][1], self.files[rel][1]))
        for was, waits in reversed(self.aside):
            if waits.exists():
                shutil.rmtree(was, ignore_errors=True)
                was.parent.mkdir(parents=True, exist_ok=True)
                waits.rename(was)
        self._drop_new_folders()

    def _drop_new_folders(self) -> None:
        shutil.rmtree(self.root / ASIDE, ignore_errors=True)
        for path in sorted(self.root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and path.relative_to(self.root).as_posix() not in self.dirs and not any(path.iterdir()):
                path.rmdir()

    def commit(self) -> None:
        shutil.rmtree(self.root / ASIDE, ignore_errors=True)


@contextlib.contextmanager
def kept(root: Path) -> Iterator[Snapshot]:
    """Run a command on ``root``; if it raises before writing finished work, the folder is put back."""
    if not is_main():  # process 0 alone keeps and puts back the folder
        yield None
        return
    snap = Snapshot(root)
    _active[snap.root] = snap
    try:
        yield snap
    except BaseException:
        _after_failure(snap)
        raise
    else:
        snap.commit()
    finally:
        _active.pop(snap.root, None)


def _after_failure(snap: Snapshot) -> None:
    """Put the folder back (or keep the finished work); a failure to do so is said, never raised over the
    command's own error."""
    try:
        if snap.progressed():
            snap.commit()
        else:
            snap.restore()
    except OSError as err:
        print(f"kdflow: warning: could not put the run folder '{snap.root}' back as it was ({err}); what "
              f"--overwrite set aside waits in '{snap.root / ASIDE}'", file=sys.stderr)


def discard(path: Path, run_dir: Path) -> None:
    """Remove ``path`` (a role's output, on --overwrite): moved aside while a :func:`kept` command runs on
    ``run_dir`` (back in place if it fails), deleted at once otherwise."""
    snap = _active.get(Path(run_dir).resolve())
    if not path.exists():
        return
    if snap is None:
        shutil.rmtree(path, ignore_errors=True)
        return
    waits = snap.root / ASIDE / f"{uuid.uuid4().hex[:8]}-{path.name}"
    waits.parent.mkdir(parents=True, exist_ok=True)
    path.rename(waits)
    snap.aside.append((path, waits))


def nothing_to_resume(run_dir: Path, role: str) -> None:
    """--resume on a run folder without this role's checkpoint (or active-learning or frontier state): one
    sentence."""
    if role in ("teacher", "student") and not has_checkpoint(run_dir / "checkpoints" / role):
        raise KdflowError(f"There is no {role} checkpoint to resume in '{run_dir / 'checkpoints' / role}'; drop "
                          "--resume to start")
    names = {"active": "active-learning run", "frontier": "frontier"}
    if role in names and not (run_dir / role / "state.json").is_file():
        raise KdflowError(f"There is no {names[role]} to resume in '{run_dir}'; drop --resume to start one")


def guard(run_dir: Path, acc, role: str, resume: bool, overwrite: bool) -> None:
    """Before a command writes into ``run_dir``: never silently overwrite finished or half-finished work,
    --overwrite clears this role's records (moved aside until it succeeds), --resume needs something to resume."""
    ckpt, out = run_dir / "checkpoints" / role, run_dir / role
    if resume and overwrite:
        raise KdflowError("--resume continues a run and --overwrite discards it; pass only one of them")
    if resume:  # nothing to resume is said before any work (a teacher's outputs would take minutes)
        nothing_to_resume(run_dir, role)
    if overwrite and acc.is_main_process:  # moved aside until the command succeeds (kdflow.engine.runfolder)
        discard(ckpt, run_dir)
        discard(out, run_dir)
        roles = {role, "teacher_guide"} if role == "student" else {role}
        for r in roles:
            discard(run_dir / "tensorboard" / r, run_dir)
        RunLog.drop_rows(run_dir, roles)
    elif not resume and (ckpt.exists() or out.exists()):
        raise KdflowError(f"Run folder '{run_dir}' already holds a {role}; pass --resume to continue it, "
                          f"--overwrite to start it again, or choose another run.name")
    acc.wait_for_everyone()


__all__ = ["Snapshot", "kept", "discard", "guard", "nothing_to_resume", "PROGRESS"]
