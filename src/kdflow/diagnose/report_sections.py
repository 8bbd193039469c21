"""The Markdown sections of a run's report (:mod:`kdflow.diagnose.report`), each from its part of ``metrics.json``
(or ``active_compare.json``): held-out overlap first, then checks, frontier, label efficiency, active rounds."""

from __future__ import annotations


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def frontier_md(fr: dict) -> list[str]:
    metric = fr["metric"]
    lines = ["## Frontier", "", f"Every measured form on validation ({len(fr['rows'])} forms of "
             f"{sum(c['status'] == 'trained' for c in fr['candidates'].values())} students); "
             "**bold** = on the Pareto front (validation " + metric + " vs p50 latency)." +
             (f" Chosen for {fr['budget']}: **{fr['chosen']['validation']['model']}**." if fr.get("chosen") else ""),
             "", f"| student | form | {metric} | retention | MB | p50 ms | smaller | faster |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(fr["rows"], key=lambda r: r["latency_ms_p50"]):
        b = "**" if r.get("on_front") else ""
        lines.append(f"| {b}{r['candidate']}{b} | {r['form']} | {r[metric]:.4f} | {r['retention']:.1%} | "
                     f"{r['size_mb']:.1f} | {r['latency_ms_p50']:.2f} | {r['compression']:.1f}x | "
                     f"{r['speedup_p50']:.1f}x |")
    stopped = [f"{n} ({c['note']})" for n, c in fr["candidates"].items() if c["status"] == "stopped"]
    return lines + ([""] + ["Stopped early: " + "; ".join(stopped) + "."] if stopped else []) + [""]


def active_md(summary: dict, metric: str) -> list[str]:
    lines = ["## Active learning", "",
             f"Strategy **{summary['strategy']}**, oracle **{summary['oracle']}**: {summary['labels']} labels "
             f"({', '.join(f'{k} {v}' for k, v in summary['sources'].items())}), {summary['teacher_queries']} distinct "
             f"examples asked of the teacher, {summary['ignored']} pool examples ignored; "
             f"status {summary['status']}" + (f" ({summary['stopped']})" if summary.get("stopped") else "") + "."
             + "".join(f" {o['overlapping']} of the {o['examples']} {split} examples are in the training data: "
                       f"'clean' scores the other {o['clean_examples']}." for split, o in
                       (summary.get("overlap") or {}).items() if split == "test"), "",
             f"| round | labels | validation {metric} | test {metric} | kappa | train s |", "|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rounds"]:
        test = f"{r['test'][metric]:.4f}" if "test" in r else ""
        test += f" ({r['test_clean'][metric]:.4f} clean)" if "test_clean" in r else ""
        kappa = f"{r['kappa']:.3f}" if r.get("kappa") is not None else ""
        lines.append(f"| {r['round']} | {r['labels']} | {r['validation'][metric]:.4f} | {test} | {kappa} | "
                     f"{r['train_seconds']} |")
    return lines + [""]


def compare_md(comp: dict) -> list[str]:
    ref = comp.get("reference")
    lines = ["## Label efficiency", ""]
    if ref:
        lines += [f"All {ref['labels']} pool labels: {comp['split']} {comp['metric']} {ref['mean']:.4f} ± {ref['std']:.4f}; "
                  f"target {comp['target']:.0%} of it = {comp['target'] * ref['mean']:.4f}.", ""]
    lines += [f"| strategy | labels to reach target | vs random | {comp['metric']} at most labels | teacher queries |",
              "|---|---:|---:|---:|---:|"]
    for name, st in comp["strategies"].items():
        need = st.get("labels_to_reach")
        frac = st.get("fraction_of_random")
        last = f"{st['mean'][-1]:.4f} ± {st['std'][-1]:.4f} ({st['labels'][-1]})" if st["labels"] else ""
        lines.append(f"| {name} | {'not reached' if need is None else f'{need:.0f}'} | "
                     f"{'' if frac is None else f'{frac:.0%}'} | {last} | {st['teacher_queries']:.0f} |")
    return lines + [""]


def overlap_md(blob: dict, metric: str) -> list[str]:
    """First on the page: held-out splits that repeat training examples, each score beside its clean part's."""
    lines = []
    for role in ("teacher", "student"):
        entry = blob.get(role) if isinstance(blob.get(role), dict) else {}
        for split, o in (entry.get("overlap") or {}).items():
            whole, clean = (entry.get(split) or {}).get(metric), (entry.get(f"{split}_clean") or {}).get(metric)
            lines.append(f"**Overlap ({role}, {split})**: {o['overlapping']} of {o['examples']} {split} examples "
                         f"({o['share']:.1%}) are in the training data, so the whole-split {metric} "
                         f"{_fmt(whole)} measures memory in part; on the other {o['clean_examples']} it is "
                         f"{_fmt(clean) if clean is not None else 'not defined (none left)'}.")
    return [*lines, ""] if lines else []


def checks_md(blob: dict) -> list[str]:
    """The warnings of the checks (``kdflow check``'s fast pass before training, and the scores after it)."""
    seen, lines = set(), []
    for role, entry in blob.items():
        for f in (entry.get("checks") or []) if isinstance(entry, dict) else []:
            if isinstance(f, dict) and (f.get("message"), role) not in seen:
                seen.add((f.get("message"), role))
                lines.append(f"- **{f.get('level', 'warning')}** ({role}, {f.get('check', '')}): {f.get('message')}")
    return ["## Checks", "", *lines, ""] if lines else []


def teacher_usage_md(blob: dict) -> list[str]:
    """What a teacher paid per call (an LLM, local or behind an endpoint) was asked by the distillation: calls,
    cached answers, retries, tokens, seconds, money, unusable answers by kind."""
    usage = ((blob.get("student") or {}).get("distill") or {}).get("teacher_usage")
    if not isinstance(usage, dict) or not usage:
        return []
    flat = {k: v for k, v in usage.items() if not isinstance(v, dict)}
    flat.update({f"unusable {k}": v for k, v in (usage.get("unusable") or {}).items() if v})
    return ["## Teacher calls", "", "| " + " | ".join(flat) + " |", "|" + "---|" * len(flat),
            "| " + " | ".join(_fmt(v) for v in flat.values()) + " |", ""]


__all__ = ["overlap_md", "checks_md", "frontier_md", "active_md", "compare_md", "teacher_usage_md"]
