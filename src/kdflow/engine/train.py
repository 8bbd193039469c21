"""One plain training loop over accelerate, used for the teacher and the student.

The loop knows nothing of distillation: ``loss_fn(model, batch)`` returns named
loss terms (``{"loss": ..., "loss_kd": ...}``) and the loop sums nothing, it
backpropagates ``"loss"`` and logs every term. Same code on CPU, one GPU, or
under ``torchrun`` / ``accelerate launch``.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..config import TrainConfig, same_setting
from ..data import set_epoch
from ..errors import KdflowError, first_line
from .checkpoint import adopt_checkpoint, check_file, open_checkpoint, save_checkpoint, save_weights
from .runlog import RunLog


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()
                                  and not torch.backends.mps.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise KdflowError("train.device is 'cuda' but no CUDA GPU is visible; use device: auto or cpu")
    if cfg.device == "mps" and not torch.backends.mps.is_available():
        raise KdflowError("train.device is 'mps' but Apple's MPS backend is not available; use device: auto or cpu")
    # accelerate keeps one state per process; teach and distill in one Python session may want
    # different precisions, so drop it (the process group, in PartialState, is kept)
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return acc


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = True  # False when it returned at ``stop_after`` with epochs (and patience) left


class NonFiniteLoss(KdflowError):
    """A training step's loss was NaN or infinite. :func:`fit` names the role, the epoch and the optimizer
    step in its own message; a caller of :func:`train_epoch` of its own (guide mode's teacher) shows this one.
    ``terms`` is empty on a process whose own losses were finite when another process's was not."""

    def __init__(self, step: int, steps: int, ids: Optional[list], terms: dict):
        self.step, self.steps, self.ids, self.terms = step, steps, ids, terms
        super().__init__(f"The training loss became {self.value} at step {step} of {steps} of an epoch"
                         f"{self.detail()}; lower the learning rate or set max_grad_norm, and run again")

    @property
    def value(self) -> str:
        return str(self.terms["loss"]) if "loss" in self.terms else "non-finite (in another process)"

    def detail(self) -> str:
        """`` on examples a, b (and 14 more), loss terms loss nan, loss_kd 0.42, loss_hard 1.38``."""
        shown = ""
        if self.ids:
            more = f" (and {len(self.ids) - 8} more)" if len(self.ids) > 8 else ""
            shown = f" on examples {', '.join(map(str, self.ids[:8]))}{more}"
        return shown + (", loss terms " + ", ".join(f"{k} {v:.6g}" for k, v in self.terms.items())
                        if self.terms else "")


CHECK_EVERY = 32  # optimizer steps between reads of the loss flags: one host sync per 32 steps, not per step


class LossWatch:
    """Finds the first non-finite loss without a host sync per step: each step's "finite" flag stays on the
    device with the step's terms and example ids, and they are read every :data:`CHECK_EVERY` steps and at
    the end of the epoch. Under several processes the first bad step is agreed on (a gather of each
    process's first), so every process stops at the same read. The steps after a bad one until the read
    only touch weights that are never saved: the run stops before the epoch's checkpoint."""

    def __init__(self, accelerator, steps: int):
        self.acc, self.steps = accelerator, steps
        self.flags: list[torch.Tensor] = []
        self.recent: list[tuple] = []

    def add(self, step: int, terms: dict, ids: Optional[list]) -> None:
        self.flags.append(torch.isfinite(terms["loss"].detach()).all())
        self.recent.append((step, ids, {k: v.detach() for k, v in terms.items()}))
        if len(self.flags) >= CHECK_EVERY:
            self.check()

    def check(self) -> None:
        """Raise :class:`NonFiniteLoss` at the first non-finite loss since the last read (on every process)."""
        if not self.flags:
            return
        ok = torch.stack(self.flags)
        first = int(torch.argmin(ok.int())) if not bool(ok.all()) else -1  # the host sync
        mine = self.recent[first][0] if first >= 0 else self.steps + 1
        agreed = mine
        if self.acc.num_processes > 1:
            agreed = int(self.acc.gather(torch.tensor([mine], device=self.acc.device)).min())
        self.flags, recent, self.recent = [], self.recent, []
        if agreed > self.steps:
            return
        if mine == agreed:
            step, ids, terms = recent[first]
            raise NonFiniteLoss(step, self.steps, ids, {k: float(v.float().mean()) for k, v in terms.items()})
        raise NonFiniteLoss(agreed, self.steps, None, {})


def train_epoch(model, loader, optimizer, scheduler, loss_fn, accelerator, max_grad_norm, bar=None) -> dict:
    """One pass over ``loader``; returns the mean of every named loss term. A NaN or infinite loss stops it
    with :class:`NonFiniteLoss` (the step, its examples' ids when the batch carries ``"ids"``, every term)."""
    model.train()
    sums: dict[str, torch.Tensor] = {}  # kept on the device: no host sync per step for them
    n, watch = 0, LossWatch(accelerator, len(loader))
    for batch in loader:
        with accelerator.autocast():
            terms = loss_fn(model, batch)
        accelerator.backward(terms["loss"])
        if max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        n += 1
        watch.add(n, terms, batch.get("ids") if isinstance(batch, dict) else None)
        for key, value in terms.items():
            sums[key] = sums[key] + value.detach().float() if key in sums else value.detach().float()
        if bar is not None:
            bar.update(1)
            if n % 10 == 1:
                bar.set_postfix(loss=f"{sums['loss'].item() / n:.4f}")
    watch.check()
    return {k: v.item() / max(n, 1) for k, v in sums.items()}


FUSED_ADAMW_DEVICES = {"cpu", "cuda", "mps", "xpu"}  # torch >= 2.4 has a fused AdamW kernel for each


def can_fuse(params: list) -> bool:
    """Whether torch's fused AdamW takes these parameters: floating point, on one device type it supports."""
    kinds = {p.device.type for p in params}
    return bool(params) and len(kinds) == 1 and kinds <= FUSED_ADAMW_DEVICES \
        and all(torch.is_floating_point(p) for p in params)


def make_optimizer(model, cfg: TrainConfig, steps: int):
    from transformers import get_linear_schedule_with_warmup
    # a model may name parameters that must not decay (a DKVB's values: decay would shrink those not selected)
    kept = getattr(model, "no_weight_decay", lambda: set())()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and n not in kept]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or n in kept)]
    # fused: one kernel for all parameters (the Hugging Face Trainer's default too); on CPU the per-parameter
    # loop took 71 ms a step for a 17M-parameter student, a fifth of the step (BENCHMARKS, peers)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                            fused=can_fuse([*decay, *no_decay]))
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), max(steps, 1))
    return opt, sched


@dataclass
class FitJob:
    """One training run: its role, settings and checkpoint folder, and the hooks around its epochs.

    ``signature``: settings a resumed run must share (saved with the state, checked on
    resume). ``on_epoch_start(epoch)`` runs before each epoch (guide mode trains the
    teacher there); ``on_epoch_end(epoch, model)`` sees the unwrapped model after each
    epoch (active learning snapshots it for a committee). Early stopping waits until
    ``min_steps`` optimizer steps are done (a small labelled set can sit on a plateau for
    its first epochs of a few steps each). ``stop_after``: return after that many epochs (the
    learning-rate schedule still spans ``cfg.epochs``); a later call with ``resume`` goes on.
    """

    role: str
    cfg: TrainConfig
    ckpt_dir: Path
    resume: bool = False
    signature: dict = field(default_factory=dict)
    min_steps: int = 0
    on_epoch_start: Optional[Callable[[int], None]] = None
    on_epoch_end: Optional[Callable[[int, torch.nn.Module], None]] = None
    stop_after: Optional[int] = None


def fit(model, loss_fn: Callable, train_loader, evaluate: Callable[[torch.nn.Module], dict], job: FitJob,
        accelerator, log: RunLog) -> FitResult:
    """Train with AdamW + linear warmup/decay, early stopping and best-checkpoint keeping.

    ``loss_fn(model, batch)`` returns named loss terms; ``evaluate(model)`` returns
    validation metrics including ``job.cfg.metric`` (higher is better). Everything
    prepared on ``accelerator`` before this call (a training teacher and its optimizer in
    guide mode) is checkpointed too. The best weights are loaded into ``model`` before returning.
    A NaN or infinite loss, or a GPU out of memory, stops it with a :class:`KdflowError`; the
    checkpoints of the epochs before stay as they were.
    """
    from tqdm.auto import tqdm

    cfg = job.cfg
    optimizer, scheduler = make_optimizer(model, cfg, cfg.epochs * len(train_loader))
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    state = _start_state(job, len(train_loader), accelerator, log)
    started = time.time()
    quiet = log.quiet or not accelerator.is_main_process
    for epoch in range(state["epoch"] + 1, min(cfg.epochs, job.stop_after or cfg.epochs)):
        if state["done"]:
            break
        set_epoch(train_loader, epoch)
        if job.on_epoch_start is not None:
            job.on_epoch_start(epoch)
        with tqdm(total=len(train_loader), desc=f"{job.role} epoch {epoch + 1}/{cfg.epochs}", disable=quiet,
                  leave=False, dynamic_ncols=True) as bar:
            try:
                losses = train_epoch(model, train_loader, optimizer, scheduler, loss_fn, accelerator,
                                     cfg.max_grad_norm, bar)
            except NonFiniteLoss as err:
                raise KdflowError(non_finite_message(err, job, epoch, state)) from None
            except torch.cuda.OutOfMemoryError:
                raise KdflowError(out_of_memory_message(job, epoch)) from None
        metrics = evaluate(model)
        if job.on_epoch_end is not None:
            job.on_epoch_end(epoch, accelerator.unwrap_model(model))
        row = {**losses, **{f"val_{k}": v for k, v in metrics.items()}, "lr": scheduler.get_last_lr()[0],
               "seconds": round(time.time() - started, 2)}
        _end_epoch(state, epoch, row, metrics[cfg.metric], model, job, accelerator, log)
        save_checkpoint(accelerator, job.ckpt_dir, state)
    accelerator.wait_for_everyone()
    _load_best(accelerator.unwrap_model(model), job, state)
    return FitResult(state["best"], state["best_epoch"], state["epoch"] + 1, state["history"],
                     time.time() - started, state["done"] or state["epoch"] + 1 >= cfg.epochs)


def non_finite_message(err: NonFiniteLoss, job: FitJob, epoch: int, state: dict) -> str:
    """One sentence: where the loss stopped being finite, on what, its terms, what was kept, what to do."""
    section = "teach" if job.role == "teacher" else "train"
    fix = f"lower {section}.lr or set {section}.max_grad_norm"
    if state["epoch"] >= 0:
        kept = f"the checkpoint after epoch {state['epoch'] + 1} in '{job.ckpt_dir / 'last'}' is kept: {fix} and " \
               "continue with --resume"
    else:
        kept = (f"no checkpoint of this {job.role} was written yet: {fix} and run the command again (with "
                "--resume where the run folder holds earlier finished work, such as active-learning rounds)")
    return (f"The {job.role}'s training loss became {err.value} at optimizer step "
            f"{epoch * err.steps + err.step} (epoch {epoch + 1}, step {err.step} of {err.steps}){err.detail()}; "
            f"nothing of this epoch was saved, and {kept}")


def out_of_memory_message(job: FitJob, epoch: int) -> str:
    section = "teach" if job.role == "teacher" else "train"
    return (f"The {job.role} ran out of GPU memory in epoch {epoch + 1} at {section}.batch_size "
            f"{job.cfg.batch_size}; lower {section}.batch_size or data.max_length (or set "
            f"{section}.mixed_precision: bf16) and start again with --overwrite, since a resumed run keeps its "
            "batch size")


def _load_best(model, job: FitJob, state: dict) -> None:
    """Load ``best.safetensors`` into ``model``, checked against the record the trainer state keeps of it."""
    from safetensors.torch import load_file
    best_file = job.ckpt_dir / "best.safetensors"
    if not best_file.is_file():
        return
    problem = check_file(best_file, state["best_file"]) if state.get("best_file") else None
    if problem is not None:
        raise KdflowError(f"The {job.role}'s best weights cannot be used: {problem}; run again with --resume "
                          "(it restores them from the last whole checkpoint) or --overwrite")
    model.load_state_dict(load_file(best_file, device="cpu"))


def _start_state(job: FitJob, steps_per_epoch: int, accelerator, log: RunLog) -> dict:
    """A fresh trainer state, or that of the newest whole checkpoint in ``job.ckpt_dir`` (a damaged
    ``last`` falls back to ``previous``, with a warning), checked against the signature."""
    signature = {"epochs": job.cfg.epochs, "batch_size": job.cfg.batch_size, "steps_per_epoch": steps_per_epoch,
                 **job.signature}
    if not job.resume:
        return {"epoch": -1, "best": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [], "done": False,
                "signature": signature}
    folder, saved, damaged = open_checkpoint(job.ckpt_dir, job.role, log)
    changed = [k for k, v in signature.items() if not same_setting(saved.get("signature", {}).get(k), v)]
    if changed:  # refused before anything on disk changes
        k = changed[0]
        raise KdflowError(f"Cannot resume: {k} was {saved['signature'].get(k)!r} and is now {signature[k]!r}; "
                          "resume with the settings of the interrupted run, or --overwrite to start again")
    adopt_checkpoint(job.ckpt_dir, folder, damaged, accelerator)
    try:
        accelerator.load_state(str(folder))
    except (OSError, RuntimeError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as err:
        raise KdflowError(f"Cannot resume the {job.role}: the checkpoint '{folder}' does not load "
                          f"({first_line(err)}); drop --resume and start again with --overwrite") from None
    log.info(f"[{job.role}] resumed from {folder} after epoch {saved['epoch'] + 1}")
    return saved


def _end_epoch(state: dict, epoch: int, row: dict, score: float, model, job: FitJob, accelerator,
               log: RunLog) -> None:
    """Record the epoch: history, best weights (``best.safetensors``), the log, early stopping."""
    cfg = job.cfg
    state["history"].append(row)
    improved = not math.isnan(score) and score > state["best"]  # a NaN metric is never the best
    if improved:
        state.update(best=score, best_epoch=epoch, bad_epochs=0)
        if accelerator.is_main_process:
            job.ckpt_dir.mkdir(parents=True, exist_ok=True)
            state["best_file"] = save_weights(accelerator.unwrap_model(model).state_dict(),
                                              job.ckpt_dir / "best.safetensors")
    else:
        state["bad_epochs"] += 1
    log.epoch(job.role, epoch, row)
    log.info(f"[{job.role}] epoch {epoch + 1}/{cfg.epochs} loss {row['loss']:.4f} "
             f"val {cfg.metric} {score:.4f}" + (" (best)" if improved else ""))
    state["epoch"] = epoch
    steps = (epoch + 1) * state["signature"]["steps_per_epoch"]
    if cfg.patience and state["bad_epochs"] >= cfg.patience and steps >= job.min_steps:
        log.info(f"[{job.role}] early stop: no {cfg.metric} gain for {cfg.patience} epochs")
        state["done"] = True


@torch.no_grad()
def predict(model, loader, accelerator, inputs_key: str = "inputs", gather: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
    """(logits ``[N, C]``, targets ``[N]``) over ``loader``; ``gather`` joins the shards of a
    prepared (per-process) loader, off for a loader every process runs whole."""
    model.eval()
    outs, targets = [], []
    for batch in loader:
        inputs = {k: v.to(accelerator.device) for k, v in batch[inputs_key].items()}
        with accelerator.autocast():
            logits = model(**inputs).logits
        logits, labels = logits.float(), batch["labels"].to(accelerator.device)
        if gather:
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        outs.append(logits.cpu())
        targets.append(labels.cpu())
    return torch.cat(outs).numpy(), torch.cat(targets).numpy()
