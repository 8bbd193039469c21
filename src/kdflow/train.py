"""One plain training loop over accelerate, used for the teacher and the student.

The loop knows nothing of distillation: ``loss_fn(model, batch)`` returns named
loss terms (``{"loss": ..., "loss_kd": ...}``) and the loop sums nothing, it
backpropagates ``"loss"`` and logs every term. Same code on CPU, one GPU, or
under ``torchrun`` / ``accelerate launch``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .config import TrainConfig, same_setting
from .data import set_epoch
from .errors import KdflowError
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


def train_epoch(model, loader, optimizer, scheduler, loss_fn, accelerator, max_grad_norm, bar=None) -> dict:
    """One pass over ``loader``; returns the mean of every named loss term."""
    model.train()
    sums: dict[str, torch.Tensor] = {}  # kept on the device: no host sync per step
    n = 0
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
        for key, value in terms.items():
            sums[key] = sums[key] + value.detach().float() if key in sums else value.detach().float()
        if bar is not None:
            bar.update(1)
            if n % 10 == 1:
                bar.set_postfix(loss=f"{sums['loss'].item() / n:.4f}")
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
    """
    from safetensors.torch import load_file
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
            losses = train_epoch(model, train_loader, optimizer, scheduler, loss_fn, accelerator,
                                 cfg.max_grad_norm, bar)
        metrics = evaluate(model)
        if job.on_epoch_end is not None:
            job.on_epoch_end(epoch, accelerator.unwrap_model(model))
        row = {**losses, **{f"val_{k}": v for k, v in metrics.items()}, "lr": scheduler.get_last_lr()[0],
               "seconds": round(time.time() - started, 2)}
        _end_epoch(state, epoch, row, metrics[cfg.metric], model, job, accelerator, log)
        save_checkpoint(accelerator, job.ckpt_dir, state)
    accelerator.wait_for_everyone()
    best_file = job.ckpt_dir / "best.safetensors"
    if best_file.is_file():
        accelerator.unwrap_model(model).load_state_dict(load_file(best_file, device="cpu"))
    return FitResult(state["best"], state["best_epoch"], state["epoch"] + 1, state["history"],
                     time.time() - started, state["done"] or state["epoch"] + 1 >= cfg.epochs)


def _start_state(job: FitJob, steps_per_epoch: int, accelerator, log: RunLog) -> dict:
    """A fresh trainer state, or the saved one of ``job.ckpt_dir/last`` (checked against the signature)."""
    signature = {"epochs": job.cfg.epochs, "batch_size": job.cfg.batch_size, "steps_per_epoch": steps_per_epoch,
                 **job.signature}
    if not job.resume:
        return {"epoch": -1, "best": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [], "done": False,
                "signature": signature}
    last = job.ckpt_dir / "last"
    if not (last / "trainer_state.json").is_file() and (job.ckpt_dir / "last.old").is_dir():
        last = job.ckpt_dir / "last.old"  # killed between the two renames of a checkpoint swap
    if not (last / "trainer_state.json").is_file():
        raise KdflowError(f"There is no {job.role} checkpoint to resume in '{job.ckpt_dir}'; drop --resume to start")
    saved = json.loads((last / "trainer_state.json").read_text())
    changed = [k for k, v in signature.items() if not same_setting(saved.get("signature", {}).get(k), v)]
    if changed:
        k = changed[0]
        raise KdflowError(f"Cannot resume: {k} was {saved['signature'].get(k)!r} and is now {signature[k]!r}; "
                          "resume with the settings of the interrupted run, or --overwrite to start again")
    accelerator.load_state(str(last))
    log.info(f"[{job.role}] resumed from {last} after epoch {saved['epoch'] + 1}")
    return saved


def _end_epoch(state: dict, epoch: int, row: dict, score: float, model, job: FitJob, accelerator,
               log: RunLog) -> None:
    """Record the epoch: history, best weights (``best.safetensors``), the log, early stopping."""
    from safetensors.torch import save_file
    cfg = job.cfg
    state["history"].append(row)
    improved = score > state["best"]
    if improved:
        state.update(best=score, best_epoch=epoch, bad_epochs=0)
        if accelerator.is_main_process:
            job.ckpt_dir.mkdir(parents=True, exist_ok=True)
            weights = accelerator.unwrap_model(model).state_dict()
            save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, job.ckpt_dir / "best.safetensors")
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


def save_checkpoint(accelerator, ckpt_dir: Path, state: dict) -> None:
    """Write ``last/`` atomically: a kill mid-save leaves the previous checkpoint whole."""
    import shutil
    last, tmp, old = ckpt_dir / "last", ckpt_dir / "last.tmp", ckpt_dir / "last.old"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            last.rename(old)
        tmp.rename(last)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


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
