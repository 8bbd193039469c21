"""Teacher and student (and the student's exported forms) side by side, measured identically.

Same split, same inputs (each example at its own length), same thread count:
quality, size of the weights, latency p50/p95 at batch 1, throughput at batch 64,
then retention (student metric / teacher metric), compression and speed-up
relative to the first row (the teacher).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from . import export as ex
from . import measure, memprobe
from .data import Featurizer, Split, loader, make_collate


def _batches(split: Split, feat: Featurizer, batch_size: int, limit: Optional[int] = None) -> list[dict]:
    part = split if limit is None or limit >= len(split) else split.subset(np.arange(limit))
    return [b["inputs"] for b in loader(part, make_collate(part, feat), batch_size, shuffle=False)]


def _logits(run: Callable[[dict], object], batches: list[dict]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([np.asarray(run(b), dtype=np.float32) for b in batches])


def measure_form(name: str, run: Callable[[dict], object], split: Split, feat: Featurizer, task: str,
                 label_names, size_mb: float, params: Optional[dict], threads: int, latency_examples: int,
                 repeats: int, memory: Optional[Callable[[Path], dict]] = None) -> dict:
    """One row: quality on ``split``, size, latency/throughput and (with ``memory``, a function
    that probes a saved inputs file in a fresh process) peak memory of batch-64 inference."""
    full = _batches(split, feat, 64)
    quality = measure.quality_report(_logits(run, full), split.targets, task, label_names)
    singles = _batches(split, feat, 1, latency_examples)
    timed = full[: max(1, 512 // 64)]
    speed = measure.latency_and_throughput(run, singles, timed, 64, threads, repeats=repeats)
    row = {"model": name, "examples": len(split), **{k: v for k, v in quality.items()
                                                       if k not in ("per_class", "top_confusions")},
           "size_mb": round(size_mb, 2), **speed}
    if memory is not None:
        with tempfile.TemporaryDirectory(prefix="kdflow-mem-") as tmp:
            row.update(memory(memprobe.save_inputs(timed, Path(tmp) / "inputs.npz")))
    if params:
        row.update(parameters=params["total"], parameters_non_embedding=params["non_embedding"])
    if "top_confusions" in quality:
        row["top_confusions"] = quality["top_confusions"]
    row["_quality"] = quality
    return row


def relate(rows: list[dict], metric: str) -> list[dict]:
    """Retention, compression and speed-up of every row against the first (the teacher)."""
    base = rows[0]
    for r in rows:
        r["retention"] = r[metric] / base[metric] if base[metric] else float("nan")
        r["compression"] = base["size_mb"] / r["size_mb"] if r["size_mb"] else float("nan")
        r["speedup_p50"] = base["latency_ms_p50"] / r["latency_ms_p50"]
        r["speedup_throughput"] = r["throughput_per_s"] / base["throughput_per_s"]
    return rows


def compare_models(teacher, student, t_feat: Featurizer, s_feat: Featurizer, split: Split, task: str, label_names,
                   teacher_size_mb: float, student_size_mb: float, onnx: bool = False, int8: bool = False,
                   out_dir: Optional[Path] = None, threads: int = 1, latency_examples: int = 100,
                   repeats: int = 3, extra_students: tuple = (), memory: bool = True) -> list[dict]:
    """Rows for teacher, student and (optionally) student-int8, student-onnx, student-onnx-int8.

    ``extra_students``: further ``(name, model, featurizer, size_mb)`` students (e.g. the
    vocabulary-pruned one), each measured with the same exported forms. ``memory``: probe
    each form's peak inference memory in a fresh process (a few seconds per form).
    """
    teacher = teacher.cpu().eval()
    common = dict(split=split, task=task, label_names=label_names, threads=threads,
                  latency_examples=latency_examples, repeats=repeats)
    common["memory_on"] = memory
    rows = [measure_form("teacher", measure.torch_runner(teacher), feat=t_feat, size_mb=teacher_size_mb,
                         params=measure.parameter_counts(teacher), **_mem(common, teacher))]
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="kdflow-export-"))
    for name, model, feat, size_mb in (("student", student, s_feat, student_size_mb), *extra_students):
        rows += _student_forms(name, model.cpu().eval(), feat, size_mb, onnx, int8, out_dir, common)
    return relate(rows, "accuracy" if task == "classification" else "pearson")


def _mem(common: dict, model=None, onnx_path=None) -> dict:
    """``common`` with the fresh-process memory probe for a PyTorch module or an ONNX file."""
    out = {k: v for k, v in common.items() if k != "memory_on"}
    if common.get("memory_on"):
        threads = common["threads"]
        if onnx_path is not None:
            out["memory"] = lambda inputs: memprobe.probe("onnx", onnx_path, inputs, threads)
        else:
            out["memory"] = lambda inputs: memprobe.probe_module(model, inputs, threads)
    return out


def _student_forms(name, student, feat, size_mb, onnx, int8, out_dir: Path, common: dict) -> list[dict]:
    rows = [measure_form(name, measure.torch_runner(student), feat=feat, size_mb=size_mb,
                         params=measure.parameter_counts(student), **_mem(common, student))]
    check = _batches(common["split"], feat, 16, 64)
    if int8:
        q = ex.quantize_torch_int8(student)
        path = ex.save_torch_int8(q, out_dir / f"{name}-int8.pt")
        row = measure_form(f"{name}-int8", measure.torch_runner(q), feat=feat, size_mb=path.stat().st_size / 2 ** 20,
                           params=None, **_mem(common, q))
        row["max_abs_diff_vs_student"] = ex.max_abs_diff(measure.torch_runner(student), measure.torch_runner(q), check)
        rows.append(row)
    if onnx:
        path = ex.export_onnx(student, check[0], out_dir / f"{name}.onnx")
        forms = [(f"{name}-onnx", path)]
        if int8:
            forms.append((f"{name}-onnx-int8", ex.quantize_onnx_int8(path, out_dir / f"{name}-int8.onnx")))
        for form, p in forms:
            run = ex.ort_runner(ex.ort_session(p, common["threads"]))
            row = measure_form(form, run, feat=feat, size_mb=p.stat().st_size / 2 ** 20, params=None,
                               **_mem(common, onnx_path=p))
            row["max_abs_diff_vs_student"] = ex.max_abs_diff(measure.torch_runner(student), run, check)
            row["path"] = str(p)
            rows.append(row)
    return rows


COLUMNS = [("model", "{}"), ("accuracy", "{:.4f}"), ("f1_macro", "{:.4f}"), ("size_mb", "{:.1f}"),
           ("latency_ms_p50", "{:.2f}"), ("latency_ms_p95", "{:.2f}"), ("throughput_per_s", "{:.0f}"),
           ("peak_memory_mb", "{:.0f}"), ("retention", "{:.1%}"), ("compression", "{:.1f}x"),
           ("speedup_p50", "{:.1f}x")]


def table(rows: list[dict], metric: str = "accuracy") -> str:
    """A plain-text table (also valid Markdown)."""
    cols = [(k if k != "accuracy" else metric, f) for k, f in COLUMNS if k != "accuracy" or metric in rows[0]]
    cols = [(k, f) for k, f in cols if k in rows[0]]
    head = "| " + " | ".join(k for k, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(f.format(r[k]) if k in r else "-" for k, f in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])
