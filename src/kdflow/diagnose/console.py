"""The short tables printed on the terminal at the end of a command (rich)."""

from __future__ import annotations

import os
from typing import Optional

from rich.console import Console
from rich.table import Table

from ..tasks import task_kind


def _console(width: Optional[int] = None) -> Console:
    probe = Console()
    return Console(width=width or (probe.width if probe.is_terminal else 200), highlight=False)


def run_table(role: str, entry: dict, metric: str = "accuracy") -> Table:
    """One run's outcome: size, training, validation and test quality, and the teacher beside it."""
    t = Table(title=f"kdflow {'teach' if role == 'teacher' else 'distill'}: {role}", title_justify="left")
    t.add_column("model")
    t.add_column("parameters", justify="right")
    t.add_column("best epoch", justify="right")
    t.add_column("train s", justify="right")
    t.add_column(f"val {metric}", justify="right")
    split = "test" if "test" in entry else "validation"
    for k in entry[split]:
        t.add_column(f"{split} {k}", justify="right")
    if "teacher_test" in entry:
        t.add_column("retention", justify="right")
        t.add_column("fewer params", justify="right")

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    row = [role, f"{entry.get('parameters', 0):,}", fmt(entry.get("best_epoch", "-")),
           fmt(entry.get("train_seconds", "-")), fmt(entry["validation"].get(metric, float("nan")))]
    row += [fmt(v) for v in entry[split].values()]
    if "teacher_test" in entry:
        base = entry["teacher_test"].get(metric)
        row += [f"{entry['test'][metric] / base:.1%}" if base else "-",
                f"{entry['compression']:.1f}x" if "compression" in entry else "-"]
        t.add_row(*row)
        t.add_row("teacher", "", "", "", "", *[fmt(entry["teacher_test"].get(k, "-")) for k in entry[split]], "", "")
    else:
        t.add_row(*row)
    for name in (k for k in entry if k.startswith("test_") and isinstance(entry[k], dict)):  # e.g. MNLI mismatched
        extra = [fmt(entry[name].get(k, "-")) for k in entry[split]] + ([""] * 2 if "teacher_test" in entry else [])
        t.add_row(f"{role}, {name[len('test_'):]} test", "", "", "", "", *extra)
    return t


ROW_COLUMNS = [("model", "model", "{}"), ("accuracy", "acc", "{:.4f}"), ("pearson", "pearson", "{:.4f}"),
               ("f1_macro", "F1 macro", "{:.4f}"), ("size_mb", "MB", "{:.1f}"),
               ("latency_ms_p50", "p50 ms", "{:.2f}"), ("latency_ms_p95", "p95 ms", "{:.2f}"),
               ("throughput_per_s", "ex/s b64", "{:,.0f}"), ("peak_memory_mb", "peak MB", "{:.0f}"),
               ("retention", "retention", "{:.1%}"), ("compression", "smaller", "{:.1f}x"),
               ("speedup_p50", "faster", "{:.1f}x")]


def rows_table(rows: list[dict], title: str = "teacher vs student (same split, same threads)") -> Table:
    """Compare/export rows side by side, the teacher (reference) row in bold."""
    cols = [c for c in ROW_COLUMNS if any(c[0] in r for r in rows)]
    t = Table(title=title, title_justify="left")
    for key, head, _ in cols:
        t.add_column(head, justify="left" if key == "model" else "right", no_wrap=key == "model")
    for r in rows:
        t.add_row(*[fmt.format(r[k]) if k in r else "-" for k, _, fmt in cols],
                  style="bold" if r is rows[0] else None)
    return t


def frontier_table(summary: dict) -> Table:
    """Every measured form of ``kdflow frontier`` (validation), the front and the chosen one marked, then the
    candidates stopped early (the chosen one's test rows are a separate table: :func:`rows_table`)."""
    metric, rows = summary["metric"], summary["rows"]
    t = Table(title=f"kdflow frontier: validation {metric} vs p50 latency (* = on the Pareto front)",
              title_justify="left")
    for head in ("student", "form", "params", metric, "retention", "MB", "p50 ms", "smaller", "faster", ""):
        t.add_column(head, justify="left" if head in ("student", "form") else "right")
    teacher = summary["teacher"]
    t.add_row("teacher", "pytorch", f"{teacher.get('parameters', 0):,}", f"{teacher[metric]:.4f}", "100.0%",
              f"{teacher['size_mb']:.1f}", f"{teacher['latency_ms_p50']:.2f}", "1.0x", "1.0x", "", style="bold")
    params = {n: c.get("parameters", 0) for n, c in summary["candidates"].items()}
    chosen = (summary.get("chosen") or {}).get("validation", {}).get("model")
    for r in sorted(rows, key=lambda r: r["latency_ms_p50"]):
        t.add_row(r["candidate"], r["form"], f"{params.get(r['candidate'], 0):,}", f"{r[metric]:.4f}",
                  f"{r['retention']:.1%}", f"{r['size_mb']:.1f}", f"{r['latency_ms_p50']:.2f}",
                  f"{r['compression']:.1f}x", f"{r['speedup_p50']:.1f}x",
                  ("*" if r.get("on_front") else "") + (" chosen" if r["model"] == chosen else ""),
                  style="bold green" if r["model"] == chosen else None)
    for name, c in summary["candidates"].items():
        if c["status"] == "stopped":
            t.add_row(name, "-", f"{params.get(name, 0):,}", "", "", "", "", "", "", c["note"], style="dim")
    return t


def show(table: Table, width: Optional[int] = None) -> None:
    """Print on the main process only."""
    if os.environ.get("RANK", "0") == "0":
        _console(width).print(table)


def check_text(out: dict) -> str:
    """``kdflow check``'s findings as lines of text: sizes, baselines, then each finding with its examples."""
    sizes = ", ".join(f"{k} {v}" for k, v in out["data"].items())
    metric = task_kind(out["task"]).headline
    lines = [f"data: {sizes}; " + (f"{out['labels']} labels" if out["labels"] else out["task"])]
    base = out["majority"]
    if base:
        lines.append("majority baseline: " + ", ".join(f"{k} {metric} {v[metric]:.4f}" for k, v in base.items()))
    if out["control"]:
        c = out["control"]
        lines.append(f"linear model on {c['examples']} training examples: validation {metric} "
                     f"{c['linear'][metric]:.4f}; on shuffled labels {c['shuffled'][metric]:.4f} (should be near "
                     "the majority baseline)")
    for f in out["findings"]:
        lines.append(f"{f['level'].upper():8s}{f['check']}: {f['message']}")
        lines += [f"          e.g. {e}" for e in f["examples"]]
    counts = out["counts"]
    lines.append(f"{counts['error']} error(s), {counts['warning']} warning(s)"
                 + ("; teach, distill and active refuse this data until the errors are fixed"
                    if counts["error"] else ""))
    return "\n".join(lines)


__all__ = ["check_text", "run_table", "rows_table", "frontier_table", "show"]
