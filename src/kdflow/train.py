"""One plain training loop over accelerate, used for the teacher and the student.

The loop knows nothing of distillation: ``loss_fn(model, batch)`` returns named
loss terms (``{"loss": ..., "loss_kd": ...}``) and the loop sums nothing, it
backpropagates ``"loss"`` and logs every term. Same code on CPU, one GPU, or
under ``torchrun`` / ``accelerate launch``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .config import TrainConfig
from .data import set_epoch
from .errors import KdflowError


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


class RunLog:
    """Log file + per-epoch CSV + TensorBoard, written by the main process only."""

    def __init__(self, run_dir: Path, accelerator, quiet: bool = False, metrics_file: str = "metrics.csv",
                 tensorboard: str = "tensorboard"):
        self.run_dir, self.acc, self.quiet = run_dir, accelerator, quiet
        self.main = accelerator.is_main_process
        self.metrics_file, self.tensorboard = metrics_file, tensorboard  # relative to run_dir
        self._tb: dict = {}
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)

    def info(self, message: str) -> None:
        if not self.main:
            return
        with open(self.run_dir / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        if not self.quiet:
            print(message, flush=True)

    def epoch(self, role: str, epoch: int, row: dict) -> None:
        if not self.main:
            return
        path = self.run_dir / self.metrics_file
        path.parent.mkdir(parents=True, exist_ok=True)
        full = {"role": role, "epoch": epoch, **{k: round(v, 6) if isinstance(v, float) else v
                                                  for k, v in row.items()}}
        rows = list(csv.DictReader(open(path))) if path.is_file() else []
        rows = [r for r in rows if not (r["role"] == role and int(r["epoch"]) == epoch)] + [full]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        if role not in self._tb:
            from torch.utils.tensorboard import SummaryWriter
            self._tb[role] = SummaryWriter(str(self.run_dir / self.tensorboard / role))
        for key, value in row.items():
            if isinstance(value, (int, float)):
                self._tb[role].add_scalar(key, value, epoch)
        self._tb[role].flush()

    def close(self) -> None:
        for writer in self._tb.values():
            writer.close()
        self._tb.clear()

    @staticmethod
    def drop_rows(run_dir: Path, roles: set) -> None:
        """Forget the per-epoch rows and final metrics of ``roles`` (on --overwrite)."""
        path = run_dir / "metrics.csv"
        if path.is_file():
            rows = [r for r in csv.DictReader(open(path)) if r["role"] not in roles]
            keys = list(dict.fromkeys(k for r in rows for k in r)) or ["role", "epoch"]
            with open(path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)
        final = run_dir / "metrics.json"
        if final.is_file():
            blob = {k: v for k, v in json.loads(final.read_text()).items() if k not in roles}
            final.write_text(json.dumps(blob, indent=2))


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list = field(default_factory=list)
    seconds: float = 0.0


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


def make_optimizer(model, cfg: TrainConfig, steps: int):
    from transformers import get_linear_schedule_with_warmup
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), max(steps, 1))
    return opt, sched


def fit(model, loss_fn: Callable, train_loader, evaluate: Callable[[torch.nn.Module], dict], cfg: TrainConfig,
        accelerator, log: RunLog, ckpt_dir: Path, role: str, resume: bool = False,
        on_epoch_start: Optional[Callable[[int], None]] = None, signature: Optional[dict] = None,
        on_epoch_end: Optional[Callable[[int, torch.nn.Module], None]] = None, min_steps: int = 0) -> FitResult:
    """Train with AdamW + linear warmup/decay, early stopping and best-checkpoint keeping.

    ``evaluate(model)`` returns validation metrics including ``cfg.metric``
    (higher is better). Everything prepared on ``accelerator`` before this call
    (a training teacher and its optimizer in guide mode) is checkpointed too.
    ``signature`` (settings a resumed run must share) is saved with the state
    and checked on resume. ``on_epoch_end(epoch, model)`` sees the unwrapped model after each
    epoch (active learning snapshots it for a committee). Early stopping waits until
    ``min_steps`` optimizer steps are done (a small labelled set can sit on a plateau for its
    first epochs of a few steps each). The best weights are loaded into ``model`` before returning.
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    steps = cfg.epochs * len(train_loader)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    signature = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "steps_per_epoch": len(train_loader),
                 **(signature or {})}
    state = {"epoch": -1, "best": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [], "done": False,
             "signature": signature}
    last, best_file = ckpt_dir / "last", ckpt_dir / "best.safetensors"
    if resume:
        if not (last / "trainer_state.json").is_file() and (ckpt_dir / "last.old").is_dir():
            last = ckpt_dir / "last.old"  # killed between the two renames of a checkpoint swap
        if not (last / "trainer_state.json").is_file():
            raise KdflowError(f"There is no {role} checkpoint to resume in '{ckpt_dir}'; drop --resume to start")
        saved = json.loads((last / "trainer_state.json").read_text())
        changed = [k for k, v in signature.items() if saved.get("signature", {}).get(k) != v]
        if changed:
            k = changed[0]
            raise KdflowError(f"Cannot resume: {k} was {saved['signature'].get(k)!r} and is now {signature[k]!r}; "
                              "resume with the settings of the interrupted run, or --overwrite to start again")
        accelerator.load_state(str(last))
        state = saved
        log.info(f"[{role}] resumed from {last} after epoch {state['epoch'] + 1}")
    started = time.time()
    quiet = log.quiet or not accelerator.is_main_process
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        if state["done"]:
            break
        set_epoch(train_loader, epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        with tqdm(total=len(train_loader), desc=f"{role} epoch {epoch + 1}/{cfg.epochs}", disable=quiet,
                  leave=False, dynamic_ncols=True) as bar:
            losses = train_epoch(model, train_loader, optimizer, scheduler, loss_fn, accelerator,
                                 cfg.max_grad_norm, bar)
        metrics = evaluate(model)
        if on_epoch_end is not None:
            on_epoch_end(epoch, accelerator.unwrap_model(model))
        score = metrics[cfg.metric]
        row = {**losses, **{f"val_{k}": v for k, v in metrics.items()}, "lr": scheduler.get_last_lr()[0],
               "seconds": round(time.time() - started, 2)}
        state["history"].append(row)
        improved = score > state["best"]
        if improved:
            state.update(best=score, best_epoch=epoch, bad_epochs=0)
            if accelerator.is_main_process:
                ckpt_dir.mkdir(parents=True, exist_ok=True)
                weights = accelerator.unwrap_model(model).state_dict()
                save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, best_file)
        else:
            state["bad_epochs"] += 1
        log.epoch(role, epoch, row)
        log.info(f"[{role}] epoch {epoch + 1}/{cfg.epochs} loss {losses['loss']:.4f} "
                 f"val {cfg.metric} {score:.4f}" + (" (best)" if improved else ""))
        state["epoch"] = epoch
        if cfg.patience and state["bad_epochs"] >= cfg.patience and (epoch + 1) * len(train_loader) >= min_steps:
            log.info(f"[{role}] early stop: no {cfg.metric} gain for {cfg.patience} epochs")
            state["done"] = True
        save_checkpoint(accelerator, ckpt_dir, state)
    accelerator.wait_for_everyone()
    if best_file.is_file():
        accelerator.unwrap_model(model).load_state_dict(load_file(best_file, device="cpu"))
    return FitResult(state["best"], state["best_epoch"], state["epoch"] + 1, state["history"],
                     time.time() - started)


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
