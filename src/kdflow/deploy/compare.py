"""Teacher and student (and the student's exported forms) side by side, measured identically.

Same split, same inputs (each example at its own length), same thread count:
quality, size of the weights, latency p50/p95 at batch 1, throughput at batch 64,
then retention (student metric / teacher metric), compression and speed-up
relative to the first row (the teacher).
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..data import Featurizer, Split, TaskData, input_batches
from ..errors import KdflowError
from ..tasks import task_kind
from . import export as ex
from . import measure, memprobe


@dataclass
class MeasureOptions:
    """Which forms of the student to build, and how to time them (``kdflow compare`` / ``export``).

    ``prune_vocab``: also a student keeping only the training text's tokens. ``prune_heads``:
    also a student without that fraction of its attention heads, the least important by
    gate-gradient importance (Michel et al. 2019) on the validation split, without retraining.
    ``memory``: probe each form's peak inference memory in a fresh process (a few seconds each).
    """

    onnx: bool = False
    int8: bool = False
    prune_vocab: bool = False
    prune_heads: float = 0.0
    threads: int = 1
    latency_examples: int = 100
    repeats: int = 3
    memory: bool = True


@dataclass
class Contestant:
    """A model to measure: its row name, the module, the featurizer it reads through, its size on disk, and the
    decision rule saved with it (multilabel: thresholds; every form of it is scored by the same)."""

    name: str
    model: nn.Module
    feat: Featurizer
    size_mb: float
    decision: Optional[dict] = None


@dataclass
class Bench:
    """What every row is measured on and with."""

    split: Split
    task: str
    label_names: Optional[list[str]]
    options: MeasureOptions


def _logits(run: Callable[[dict], object], batches: list[dict]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([np.asarray(run(b), dtype=np.float32) for b in batches])


def measure_form(name: str, run: Callable[[dict], object], feat: Featurizer, size_mb: float, params: Optional[dict],
                 bench: Bench, memory: Optional[Callable[[Path], dict]] = None, decision: Optional[dict] = None) -> dict:
    """One row: quality on the bench's split, size, latency/throughput and (with ``memory``, a function
    that probes a saved inputs file in a fresh process) peak memory of batch-64 inference."""
    o = bench.options
    full = input_batches(bench.split, feat, 64)
    quality = measure.quality_report(_logits(run, full), bench.split.targets, bench.task, bench.label_names, decision)
    singles = input_batches(bench.split, feat, 1, o.latency_examples)
    timed = full[: max(1, 512 // 64)]
    speed = measure.latency_and_throughput(run, singles, timed, 64, o.threads, repeats=o.repeats)
    row = {"model": name, "examples": len(bench.split), **{k: v for k, v in quality.items()
                                                            if k not in ("per_class", "per_label", "top_confusions")},
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


def compare_models(teacher: Contestant, students: list[Contestant], split: Split, task: str, label_names,
                   options: MeasureOptions, out_dir: Optional[Path] = None) -> list[dict]:
    """Rows for the teacher and, per student, the student and (as ``options`` ask) its ``-int8``,
    ``-onnx`` and ``-onnx-int8`` forms, written into ``out_dir``."""
    bench = Bench(split, task, label_names, options)
    rows = [teacher_row(teacher, bench)]
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="kdflow-export-"))
    for s in students:
        rows += student_forms(Contestant(s.name, s.model.cpu().eval(), s.feat, s.size_mb, s.decision), bench, out_dir)
    return relate(rows, task_kind(task).headline)


def teacher_row(teacher: Contestant, bench: Bench) -> dict:
    """The teacher's row (PyTorch as it is), the reference of :func:`relate`."""
    t = teacher.model.cpu().eval()
    return measure_form(teacher.name, measure.torch_runner(t), teacher.feat, teacher.size_mb,
                        measure.parameter_counts(t), bench, _probe(bench.options, t), teacher.decision)


def _probe(options: MeasureOptions, model=None, onnx_path=None) -> Optional[Callable[[Path], dict]]:
    """The fresh-process memory probe for a PyTorch module or an ONNX file (None when not asked)."""
    if not options.memory:
        return None
    if onnx_path is not None:
        return lambda inputs: memprobe.probe("onnx", onnx_path, inputs, options.threads)
    return lambda inputs: memprobe.probe_module(model, inputs, options.threads)


def student_forms(s: Contestant, bench: Bench, out_dir: Path) -> list[dict]:
    o, name, feat = bench.options, s.name, s.feat
    reference = measure.torch_runner(s.model)
    rows = [measure_form(name, reference, feat, s.size_mb, measure.parameter_counts(s.model), bench,
                         _probe(o, s.model), s.decision)]
    check = input_batches(bench.split, feat, 16, 64)
    if o.int8:
        q = ex.quantize_torch_int8(s.model)
        path = ex.save_torch_int8(q, out_dir / f"{name}-int8.pt")
        row = measure_form(f"{name}-int8", measure.torch_runner(q), feat, path.stat().st_size / 2 ** 20, None,
                           bench, _probe(o, q), s.decision)
        row["max_abs_diff_vs_student"] = ex.max_abs_diff(reference, measure.torch_runner(q), check)
        rows.append(row)
    if o.onnx:
        path = ex.export_onnx(s.model, check[0], out_dir / f"{name}.onnx")
        if s.decision is not None:  # the ONNX graph returns scores; these thresholds turn them into labels
            (out_dir / f"{name}.decision.json").write_text(json.dumps({"labels": bench.label_names, **s.decision},
                                                                      indent=2))
        forms = [(f"{name}-onnx", path)]
        if o.int8:
            forms.append((f"{name}-onnx-int8", ex.quantize_onnx_int8(path, out_dir / f"{name}-int8.onnx")))
        for form, p in forms:
            run = ex.ort_runner(ex.ort_session(p, o.threads))
            row = measure_form(form, run, feat, p.stat().st_size / 2 ** 20, None, bench, _probe(o, onnx_path=p),
                               s.decision)
            row["max_abs_diff_vs_student"] = ex.max_abs_diff(reference, run, check)
            row["path"] = str(p)
            rows.append(row)
    return rows


# ------------------------------------------------------------------ further students to measure

def vocab_pruned_student(student: nn.Module, feat: Featurizer, data: TaskData, out_dir: Path) -> Contestant:
    """The student with only the tokens of the training text (train split only: no test leakage)."""
    from ..data import TextFeaturizer
    from ..models import save_model
    from .prune import prune_vocabulary
    tokenizer = getattr(feat, "tokenizer", None)
    if tokenizer is None:
        raise KdflowError("--prune-vocab needs a student that reads text with a tokenizer")
    pruned, ptok, _ = prune_vocabulary(copy.deepcopy(student), tokenizer, data.train.inputs["text"],
                                       data.train.inputs.get("text_pair"), feat.max_length)
    folder = out_dir / "student-pruned"
    save_model(pruned, folder, ptok, data.label_names, data.task)
    return Contestant("student-pruned", pruned, TextFeaturizer(ptok, feat.max_length), measure.files_size_mb(folder))


def head_pruned_student(student: nn.Module, feat: Featurizer, data: TaskData, fraction: float,
                        out_dir: Path) -> Contestant:
    """The student without its least important ``fraction`` of attention heads (importance
    from the validation split, never test), measured as it is: no retraining after pruning."""
    from .heads import head_importance, heads_to_prune, prune_heads
    if not task_kind(data.task).classes:
        raise KdflowError("--prune-heads scores heads with the classification loss; it needs a classification task")
    batches = input_batches(data.validation, feat, 32)
    targets = [torch.as_tensor(data.validation.targets[i:i + 32], dtype=torch.long)
               for i in range(0, len(data.validation), 32)]
    pruned = copy.deepcopy(student).cpu()
    drop = heads_to_prune(head_importance(pruned, batches, targets), fraction)
    prune_heads(pruned, drop)
    name = f"student-heads{round(100 * fraction)}"
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(pruned.state_dict(), folder / "weights.pt")
    (folder / "pruned_heads.json").write_text(json.dumps({str(k): v for k, v in drop.items()}))
    return Contestant(name, pruned, feat, measure.files_size_mb(folder))


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
