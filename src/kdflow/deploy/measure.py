"""Quality and cost of a model, measured the same way for teacher, student and exported forms.

Quality comes from scikit-learn / scipy. Cost: parameters (total and without
embeddings), size of the saved weights, CPU latency at batch 1 (p50 / p95 over
real examples at their own length) and throughput at batch 64, after warm-up,
with a fixed thread count, medians of several repeats. Peak memory of inference
is measured in a fresh process per model (:mod:`kdflow.deploy.memprobe`).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn


def quality_report(logits: np.ndarray, targets: np.ndarray, task: str,
                   label_names: Optional[Sequence[str]] = None, decision: Optional[dict] = None) -> dict:
    """Headline metrics plus the task kind's details (classification: a per-class report and the top confusions;
    multilabel: per-label scores), by the saved ``decision`` rule where there is one."""
    from ..tasks import task_kind
    kind = task_kind(task)
    out = kind.quality(logits, targets, decision, label_names)
    kind.details(logits, targets, label_names, out, decision)
    return out


def parameter_counts(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False))
    return {"total": total, "embeddings": emb, "non_embedding": total - emb}


def files_size_mb(folder: "str | Path", patterns: Sequence[str] = ("*.safetensors", "*.onnx", "*.pt")) -> float:
    """Size on disk of the weight files in a saved model folder (tokenizer and configs excluded)."""
    folder = Path(folder)
    files = {f for pat in patterns for f in folder.glob(pat)}
    return sum(f.stat().st_size for f in files) / 2 ** 20


def time_calls(run: Callable[[dict], object], inputs: Sequence[dict], warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``run`` on each input, ``repeats`` passes after ``warmup`` passes over the first ones."""
    for x in inputs[:warmup]:
        run(x)
    times = []
    for _ in range(repeats):
        for x in inputs:
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
    return times


def latency_and_throughput(run: Callable[[dict], object], singles: Sequence[dict], batches: Sequence[dict],
                           batch_size: int, threads: int = 1, warmup: int = 10, repeats: int = 3) -> dict:
    """p50/p95 latency (ms) at batch 1 and throughput (examples/s) at ``batch_size``, at ``threads`` threads.

    Each throughput repeat times all ``batches``; the median repeat is reported. Peak
    memory is measured separately, in a fresh process (:mod:`kdflow.deploy.memprobe`).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            lat = np.array(time_calls(run, singles, warmup, repeats)) * 1000
            time_calls(run, batches[:1], 1, 1)  # warm the larger shapes
            per_repeat = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for b in batches:
                    run(b)
                per_repeat.append(time.perf_counter() - t0)
        n = sum(len(next(iter(b.values()))) for b in batches)
        return {"latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p95": float(np.percentile(lat, 95)),
                "throughput_per_s": n / statistics.median(per_repeat), "batch_size": batch_size,
                "threads": threads, "repeats": repeats}
    finally:
        torch.set_num_threads(before)


def torch_runner(model: nn.Module) -> Callable[[dict], object]:
    model.eval()
    return lambda inputs: model(**inputs).logits
