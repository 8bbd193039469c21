"""Teacher outputs computed once, kept on disk, keyed by example id; and the plumbing that gives
the Distiller its targets in each mode.

A cache folder belongs to one teacher *fingerprint* (hash of its weights and of
the tokenization settings), so a retrained teacher never serves stale logits.
Within it, one file per compute call, or per ``flush_every`` new rows (``part-NNNN.pt``: ids +
logits), lets the cache grow across active-learning rounds without rewriting what is there.
Files are read with ``torch.load(weights_only=True)``.

Modes (:func:`attach_targets`): ``offline`` — the teacher's logits for the training split
(and every extra teacher's) come from the cache, computed once; ``online`` — the
Distiller runs the teacher per batch; ``guide`` — the teacher trains one epoch before
each student epoch and every ``guide_every`` epochs its current logits become the
targets (:func:`guide_hook`).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .. import models
from ..config import learning_rate
from ..data import Featurizer, Split, loader, make_collate, make_featurizer, set_epoch, train_loader
from ..engine.distributed import from_main, is_main, sharded_rows
from ..engine.run import Run, cache_root, selection_fn
from ..engine.train import make_optimizer, predict, train_epoch
from ..errors import KdflowError
from .distiller import Distiller, freeze
from .losses import label_loss


class TeacherCache:
    def __init__(self, root: "str | Path", fingerprint: str, flush_every: int = 0, writer: bool = True):
        """``flush_every``: new rows are written once that many are pending (0: at every compute call);
        :meth:`flush` writes the rest. Rows not yet written are lost with the process, and recomputed.
        ``writer``: whether this process writes its new rows (off where another process writes the same)."""
        self.folder = Path(root) / fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.flush_every, self.writer = flush_every, writer
        self._rows: dict[str, torch.Tensor] = {}
        self._pending: list[str] = []  # computed, not yet on disk
        self._read: set[str] = set()  # part files already read (parts are written once, never changed)
        self.computed = 0  # examples whose outputs this object had to compute
        self.served = 0    # examples answered from disk or memory
        self.reload()

    def reload(self) -> None:
        """Read the parts on disk not read yet (another process may have written new ones)."""
        for part in sorted(self.folder.glob("part-*.pt")):
            if part.name in self._read:
                continue
            self._read.add(part.name)
            try:
                blob = torch.load(part, weights_only=True)
            except Exception:
                raise KdflowError(f"Teacher cache file '{part}' is damaged; delete it (the outputs it held are "
                                  "recomputed on the next run)") from None
            for i, key in enumerate(blob["ids"]):
                self._rows[key] = blob["logits"][i]

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def missing(self, ids: Sequence[str]) -> list[int]:
        """Positions of ``ids`` this cache has no row for."""
        return [i for i, key in enumerate(ids) if key not in self._rows]

    def add(self, keys: Sequence[str], logits: torch.Tensor) -> None:
        """New rows, computed by the caller (written at the next flush)."""
        logits = logits.detach().float().cpu()
        if logits.shape[0] != len(keys):
            raise RuntimeError(f"teacher returned {logits.shape[0]} rows for {len(keys)} examples")
        for key, row in zip(keys, logits):
            self._rows[key] = row
        self._pending.extend(keys)
        self.computed += len(keys)
        if len(self._pending) >= self.flush_every:
            self.flush()

    def get(self, ids: Sequence[str], compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """Logits for ``ids`` (``[N, C]``); ``compute(positions)`` runs only for the missing ones."""
        missing = self.missing(ids)
        if missing:
            self.add([ids[i] for i in missing], compute(missing))
        self.served += len(ids) - len(missing)
        return torch.stack([self._rows[key] for key in ids]) if ids else torch.empty(0)

    def flush(self) -> None:
        """Write the rows computed since the last write as one part file."""
        if not self._pending:
            return
        if not self.writer:  # every process holds the rows; another one writes them
            self._pending = []
            return
        keys = list(dict.fromkeys(self._pending))
        # unique names: two runs sharing the cache never write the same file
        part = self.folder / f"part-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.pt"
        tmp = part.with_suffix(".tmp")
        torch.save({"ids": keys, "logits": torch.stack([self._rows[k] for k in keys])}, tmp)
        tmp.replace(part)  # atomic: a killed run never leaves half a file behind
        self._read.add(part.name)
        self._pending = []


# ------------------------------------------------------------------ targets for the Distiller

def cache_for(run: "Run", teacher, tokenizer) -> TeacherCache:
    """The on-disk cache of this teacher's logits, keyed by its weights and the tokenization settings."""
    return TeacherCache(cache_root(run), models.fingerprint(teacher, _settings(run, tokenizer)), writer=is_main())


def _settings(run: "Run", tokenizer) -> str:
    if tokenizer is None:
        tok = "none"
    elif hasattr(tokenizer, "__len__"):  # a tokenizer: its class and vocabulary size
        tok = f"{type(tokenizer).__name__}:{len(tokenizer)}"
    else:  # an image model's preprocessing: its normalisation and size, in full
        tok = repr(tokenizer)
    words = f";subwords={run.cfg.data.subwords}" if run.data.modality == "words" else ""  # how words are read
    return f"max_length={run.cfg.data.max_length};tok={tok};precision={run.cfg.train.mixed_precision}{words}"


def teacher_logits(run: "Run", teacher, split: Split, feat: Featurizer, cache: Optional[TeacherCache]):
    """``[N, C]`` teacher logits for a split, through the cache when there is one."""
    device = run.acc.device

    def compute(positions: list[int]) -> torch.Tensor:
        part = split.subset(positions)
        dl = loader(part, make_collate(part, feat), run.cfg.train.eval_batch_size, shuffle=False)
        teacher.to(device)
        logits, _ = predict(teacher, dl, run.acc, gather=False)
        return torch.from_numpy(logits)

    if cache is None:
        return sharded_rows(list(range(len(split))), compute)  # each process a share, gathered by position
    run.acc.wait_for_everyone()
    cache.reload()
    # process 0 says what is missing (another run may add parts to a shared cache between two processes'
    # reads); every process computes its share of that, and all add the gathered rows (process 0 writes)
    missing = from_main(cache.missing(split.ids))
    if missing:
        cache.add([split.ids[i] for i in missing], sharded_rows(missing, compute))
        cache.served -= len(missing)  # counted once, as computed
    return cache.get(split.ids, compute)  # rows process 0 had and this one did not: computed here


def extra_teacher_targets(run: "Run") -> list:
    """Cached logits of distill.extra_teachers on the training split (multi-teacher KD)."""
    out = []
    for e in run.cfg.distill.extra_teachers:
        model, tok, labels, task = models.load_saved(e.name)
        if labels != run.data.label_names or task != run.data.task:
            raise KdflowError(f"Extra teacher '{e.name}' was trained for other labels than this data's; give "
                              "teachers fine-tuned on exactly these labels")
        cache = cache_for(run, model, tok)
        feat = make_featurizer(run.data.modality, tok, run.cfg.data.max_length, subwords=run.cfg.data.subwords)
        out.append(teacher_logits(run, freeze(model), run.data.train, feat, cache))
        run.info(f"[distill] extra teacher {e.name} (weight {e.weight:g}): {cache.computed} computed, "
                 f"{cache.served} from cache")
    return out


@dataclass
class Targets:
    """What :func:`attach_targets` set up: the cache (offline/online) and the hook that refreshes guide
    targets before each epoch."""

    cache: Optional[TeacherCache] = None
    on_epoch_start: Optional[Callable[[int], None]] = None


def attach_targets(run: "Run", distiller: Distiller, tokenizer, t_feat: Featurizer, resume: bool) -> Targets:
    """Give ``distiller`` its teacher targets for ``run.data.train`` as its mode wants them."""
    dc, d, teacher = run.cfg.distill, run.data, distiller.teacher
    if dc.mode == "guide":
        return Targets(on_epoch_start=guide_hook(run, distiller, t_feat, resume))
    if not distiller.uses_teacher:
        return Targets()
    teacher.to(run.acc.device)  # moved, never prepared: no DDP wrapper around a frozen teacher
    out = Targets(cache=cache_for(run, teacher, tokenizer))
    if dc.mode == "offline":
        started = time.perf_counter()
        distiller.set_targets(teacher_logits(run, teacher, d.train, t_feat, out.cache))
        run.info(f"[distill] teacher outputs: {out.cache.computed} computed, {out.cache.served} from cache "
                 f"{out.cache.folder} in {time.perf_counter() - started:.1f} s ({run.acc.num_processes} process(es))")
        distiller.extra_targets = extra_teacher_targets(run)
    if dc.mode == "offline" and run.acc.device.type != "cpu" and not distiller.pairs:
        teacher.to("cpu")  # its outputs are cached: free the accelerator for the student
    return out


def teacher_test_logits(run: "Run", distiller: Distiller, t_feat: Featurizer, targets: Targets
                        ) -> Optional[np.ndarray]:
    """The teacher's test logits for the side-by-side numbers (offline and online modes), through the cache.
    Called after training: the teacher's pass over test is not part of the training loop (at one thread it
    took 28 s on CLINC150 Small, and the peers bench read it as loop time)."""
    if run.data.test is None or targets.cache is None:
        return None
    logits = teacher_logits(run, distiller.teacher, run.data.test, t_feat, targets.cache).numpy().copy()
    dropped = ~np.isfinite(logits).reshape(len(logits), -1).all(1)
    if dropped.any():  # an answer the teacher could not give (kdflow.models.remote) counts as a wrong one
        gold = run.data.test.targets[dropped].astype(np.int64)
        logits[dropped] = 0.0
        logits[np.flatnonzero(dropped), (gold + 1) % logits.shape[1]] = 1.0
        run.info(f"[distill] the teacher gave no usable answer for {int(dropped.sum())} test examples: scored as wrong")
    return logits


def guide_hook(run: "Run", distiller: Distiller, t_feat: Featurizer, resume: bool) -> Callable[[int], None]:
    """Guide mode: before each student epoch the teacher trains one epoch; every k epochs
    its current soft labels become the student's targets.

    The teacher and its optimizer are prepared here, so the student's checkpoints carry
    them; the current targets are saved beside them, so a resumed run trains on exactly
    the targets an uninterrupted one would have.
    """
    cfg, acc, d = run.cfg, run.acc, run.data
    t_dl = train_loader(d.train, t_feat, None, cfg.teach.batch_size, cfg.teach.seed)
    teach = cfg.teach.model_copy(update={"lr": learning_rate(
        cfg.teach, "teacher", models.starts_pretrained(cfg.model.teacher, distiller.teacher))})
    optimizer, scheduler = make_optimizer(distiller.teacher, teach, cfg.train.epochs * len(t_dl))
    t_model, optimizer, t_dl, scheduler = acc.prepare(distiller.teacher, optimizer, t_dl, scheduler)
    evaluate = selection_fn(run, d.validation, t_feat, cfg.train.eval_batch_size)
    saved = cfg.run_dir / "checkpoints" / "student" / "guide_targets.pt"
    restored = {"epoch": None, "read": not resume}

    loss_fn = partial(label_loss, task=d.task, inputs="teacher_inputs")

    def on_epoch_start(epoch: int) -> None:
        if not restored["read"] and saved.is_file():  # read here: fit has put back the checkpoint's copy
            blob = torch.load(saved, weights_only=True)
            distiller.set_targets(blob["targets"])
            distiller.refreshes = int(blob["refreshes"])
            restored["epoch"] = int(blob["epoch"])
        restored["read"] = True
        if restored["epoch"] is not None and restored["epoch"] >= epoch:
            # killed inside the epoch that refreshed them: that refresh happens again below
            distiller.targets, distiller.refreshes, restored["epoch"] = None, distiller.refreshes - 1, None
        set_epoch(t_dl, epoch)
        losses = train_epoch(t_model, t_dl, optimizer, scheduler, loss_fn, acc, cfg.teach.max_grad_norm)
        metrics = evaluate(t_model)
        run.log.epoch("teacher_guide", epoch, {**losses, **{f"val_{k}": v for k, v in metrics.items()}})
        if distiller.targets is None or epoch % cfg.distill.guide_every == 0:
            distiller.set_targets(teacher_logits(run, acc.unwrap_model(t_model), d.train, t_feat, None))
            if acc.is_main_process:
                saved.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"targets": distiller.targets, "refreshes": distiller.refreshes, "epoch": epoch},
                           saved.with_suffix(".tmp"))
                saved.with_suffix(".tmp").replace(saved)
            run.info(f"[guide] epoch {epoch + 1}: teacher val {cfg.train.metric} "
                     f"{metrics[cfg.train.metric]:.4f}; soft labels refreshed")
        t_model.train()
    return on_epoch_start
