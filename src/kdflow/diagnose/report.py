"""``report.md`` and a self-contained ``report.html`` (plots embedded) for a run folder.

Written from what the run folder already holds (``metrics.csv``, ``metrics.json``),
so it can be regenerated at any time: ``kdflow report runs/NAME``.
Plots (``plots/*.png``): training curves per role, teacher-vs-student bars of
quality / latency / size, the student's most frequent confusions, and (``kdflow frontier``)
the accuracy / latency / size front.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from ..engine.runlog import METRICS_FIX, read_metrics, read_rows
from ..errors import KdflowError, first_line
from ..files import RUN_FIX, json_type, must_be_folder, read_json
from ..tasks import TASKS, headline_of
from .report_sections import active_md, checks_md, compare_md, frontier_md, overlap_md, teacher_usage_md

# metrics.json holds null where a metric was NaN (valid JSON); the report reads those back as NaN
METRIC_KEYS = {"mse", "retention", "f1_macro", "hamming_loss", *(m for kind in TASKS.values() for m in kind.metrics)}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_curves(rows: list[dict], out: Path) -> "Path | None":
    """Training loss and validation metric per epoch of each role (``rows``: metrics.csv's)."""
    rows = [r for r in rows if r.get("loss")]
    if not rows:
        return None
    plt = _plt()
    metric = next((f"val_{k.headline}" for k in TASKS.values() if f"val_{k.headline}" in rows[0]), None)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for role in dict.fromkeys(r["role"] for r in rows):
        mine = [r for r in rows if r["role"] == role]
        epochs = [int(r["epoch"]) + 1 for r in mine]
        axes[0].plot(epochs, [float(r["loss"]) for r in mine], marker="o", ms=3, label=role)
        if metric:
            axes[1].plot(epochs, [float(r[metric]) for r in mine if r.get(metric)], marker="o", ms=3, label=role)
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].set(title=f"validation {metric[4:] if metric else ''}", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, out)


def plot_bars(rows: list[dict], metric: str, out: Path) -> "Path | None":
    if not rows:
        return None
    plt = _plt()
    names = [r["model"] for r in rows]
    panels = [(metric, f"test {metric}"), ("latency_ms_p50", "latency p50, batch 1 (ms)"),
              ("size_mb", "weights on disk (MB)")]
    panels = [(k, t) for k, t in panels if all(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    axes = axes if len(panels) > 1 else [axes]
    colors = ["#4C72B0" if n == "teacher" else "#DD8452" for n in names]
    for ax, (key, title) in zip(axes, panels):
        vals = [r[key] for r in rows]
        ax.bar(range(len(names)), vals, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    return _save(plt, fig, out)


def plot_confusions(confusions: list[dict], out: Path) -> "Path | None":
    if not confusions:
        return None
    plt = _plt()
    labels = [f"{c['true']} → {c['predicted']}" for c in confusions][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1))
    ax.barh(labels, [c["count"] for c in confusions][::-1], color="#C44E52")
    ax.set(title="student: most frequent confusions (test)", xlabel="examples")
    ax.tick_params(axis="y", labelsize=8)
    return _save(plt, fig, out)


STRATEGY_COLORS = {"random": "black"}


def plot_active(summary: dict, metric: str, out: Path) -> "Path | None":
    """One active-learning run: validation and test metric against the number of labels."""
    rounds = summary.get("rounds") or []
    if not rounds:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    calls = summary.get("target") == "teacher_calls"
    labels = [r["teacher_queries"] if calls else r["labels"] for r in rounds]
    for split, style in (("validation", "--"), ("test", "-")):
        vals = [r[split][metric] for r in rounds if split in r]
        if len(vals) == len(rounds):
            ax.plot(labels, vals, style, marker="o", ms=4, label=f"student, {split}")
    for split, style in (("validation", "--"), ("test", "-")):  # target teacher: the teacher of every round
        vals = [r["teacher"][split][metric] for r in rounds if split in r.get("teacher", {})]
        if len(vals) == len(rounds):
            ax.plot(labels, vals, style, marker="s", ms=4, color="#C44E52", label=f"teacher, {split}")
    teacher = summary.get("teacher_validation")
    if teacher and metric in teacher:
        ax.axhline(teacher[metric], color="#4C72B0", ls=":", label="teacher, validation")
    x = "teacher calls" if calls else "labelled examples"
    ax.set(title=f"active learning: {summary.get('strategy')} ({summary.get('oracle')} oracle)", xlabel=x,
           ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, out)


def plot_label_efficiency(comp: dict, out: Path) -> "Path | None":
    """Mean ± std (over seeds) of every strategy's curve; the all-labels student and the target."""
    strategies = comp.get("strategies") or {}
    if not strategies:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for name, st in strategies.items():
        if not st["labels"]:
            continue
        x, m, sd = np.asarray(st["labels"]), np.asarray(st["mean"]), np.asarray(st["std"])
        color = STRATEGY_COLORS.get(name)
        line, = ax.plot(x, m, marker="o", ms=3, label=name, color=color, ls="--" if name == "random" else "-")
        ax.fill_between(x, m - sd, m + sd, alpha=0.15, color=line.get_color())
    ref = comp.get("reference")
    if ref:
        ax.axhline(ref["mean"], color="grey", lw=1, label=f"all {ref['labels']} labels")
        ax.axhline(comp["target"] * ref["mean"], color="grey", lw=1, ls=":",
                   label=f"{comp['target']:.0%} of all-labels")
    seeds = len(comp["seeds"])
    ax.set(title=f"label efficiency ({comp['split']} {comp['metric']}, mean ± std over {seeds} seed"
                 f"{'s' if seeds != 1 else ''}, {comp.get('oracle')} oracle)", xlabel="labelled examples",
           ylabel=comp["metric"])
    spans = [st["labels"] for st in strategies.values() if st["labels"]]
    if spans and max(max(x) for x in spans) > 8 * min(min(x) for x in spans):
        ax.set_xscale("log")  # geometric batch growth: equal room for every round
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, out)


def plot_frontier(fr: dict, out: Path) -> "Path | None":
    """``kdflow frontier``: validation metric against p50 latency for every measured form (marker area
    ~ size on disk), the Pareto front as a line, the teacher and the chosen form marked."""
    rows, metric = fr.get("rows") or [], fr.get("metric", "accuracy")
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    forms = sorted({r["form"] for r in rows})
    biggest = max(r["size_mb"] for r in rows) or 1.0
    for form, color in zip(forms, ("#4C72B0", "#DD8452", "#55A868", "#C44E52")):
        mine = [r for r in rows if r["form"] == form]
        ax.scatter([r["latency_ms_p50"] for r in mine], [r[metric] for r in mine], alpha=0.6, color=color,
                   s=[20 + 400 * r["size_mb"] / biggest for r in mine], label=form)
        for r in mine:
            ax.annotate(r["candidate"], (r["latency_ms_p50"], r[metric]), xytext=(4, -9), textcoords="offset points",
                        fontsize=6, alpha=0.8)
    front = sorted((r for r in rows if r.get("on_front")), key=lambda r: r["latency_ms_p50"])
    ax.plot([r["latency_ms_p50"] for r in front], [r[metric] for r in front], "k--", lw=1, label="Pareto front")
    chosen = (fr.get("chosen") or {}).get("validation")
    if chosen:
        ax.scatter([chosen["latency_ms_p50"]], [chosen[metric]], marker="*", s=250, color="gold",
                   edgecolor="k", zorder=5, label=f"chosen ({fr.get('budget')})")
    teacher = fr.get("teacher") or {}
    if metric in teacher:
        ax.axhline(teacher[metric], color="grey", ls=":", label=f"teacher ({teacher['latency_ms_p50']:.1f} ms)")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10 rather than 10^-1 ...
    ax.xaxis.set_minor_formatter(NullFormatter())  # ... and no crowded 2x10^-1, 3x10^-1 labels
    ax.set(title=f"frontier: validation {metric} vs p50 latency (marker area ~ size)", xlabel="p50 latency, ms "
           "(batch 1, log scale)", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, out)


def _table_md(rows: list[dict]) -> str:
    from ..deploy.compare import table
    return table(rows)


def nan_for_null(value):
    """``value`` with a null under a metric's name (:data:`METRIC_KEYS`) read back as NaN."""
    if isinstance(value, dict):
        return {k: float("nan") if v is None and k in METRIC_KEYS else nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_for_null(v) for v in value]
    return value


def read_records(run: "str | Path") -> tuple[dict, list[dict], "dict | None"]:
    """metrics.json, metrics.csv's rows and active_compare.json of a run, each checked before anything is
    written: a damaged file is one sentence naming it."""
    run = must_be_folder(Path(run), f"Run folder '{run}'", RUN_FIX)
    blob = nan_for_null(read_metrics(run))
    rows = read_rows(run / "metrics.csv")
    comp_path = run / "active_compare.json"
    comp = nan_for_null(read_json(comp_path, f"'{comp_path}'", "run kdflow active --strategies again to rewrite it",
                                  dict)) if comp_path.exists() else None
    wanted = {"teacher": dict, "student": dict, "active": dict, "frontier": dict, "deploy": list}
    for key, kind in wanted.items():
        if blob.get(key) is not None and not isinstance(blob[key], kind):
            raise KdflowError(f"'{run / 'metrics.json'}' holds {json_type(blob[key])} under '{key}', where kdflow "
                              f"writes {json_type(kind())}; {METRICS_FIX}")
    if any(not isinstance(r, dict) or not isinstance(r.get("model"), str) for r in blob.get("deploy") or []):
        raise KdflowError(f"'{run / 'metrics.json'}' holds 'deploy' rows without a model name; {METRICS_FIX}")
    return blob, rows, comp


def report(run: "str | Path") -> dict:
    """``kdflow report RUN``: :func:`write_report` on a run folder that holds a metrics.json."""
    folder = must_be_folder(Path(run), f"Run folder '{run}'", RUN_FIX)
    if not (folder / "metrics.json").exists():
        raise KdflowError(f"'{run}' holds no metrics.json; give a run folder after 'kdflow teach' or 'distill'")
    return write_report(folder)


def write_report(run: "str | Path") -> dict:
    """(Re)write ``plots/*.png``, ``report.md`` and ``report.html``; returns their paths. Nothing is written
    unless the run's records read back whole."""
    run = Path(run)
    blob, rows, comp = read_records(run)
    try:
        deploy, metric, lines, extra = _markdown(run, blob, comp)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise KdflowError(f"The records of '{run}' (metrics.json, active_compare.json) hold entries of another "
                          f"shape than kdflow writes ({first_line(err)}); {METRICS_FIX}") from None
    plots = run / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    student_row = next((r for r in deploy if r["model"] == "student"), {})
    active, fr = blob.get("active"), blob.get("frontier")
    images = [p for p in (plot_curves(rows, plots / "curves.png"), plot_bars(deploy, metric, plots / "compare.png"),
                          plot_confusions(student_row.get("top_confusions", []), plots / "confusions.png"),
                          plot_active(active, active.get("metric", "accuracy"), plots / "active.png")
                          if active else None,
                          plot_label_efficiency(comp, plots / "label_efficiency.png") if comp else None,
                          plot_frontier(fr, plots / "frontier.png") if fr else None) if p]
    lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in images] + [""]
    (run / "report.md").write_text("\n".join(lines))
    (run / "report.html").write_text(_page(run.name, deploy, metric, extra, images))
    return {"md": run / "report.md", "html": run / "report.html", "plots": images}


def _markdown(run: Path, blob: dict, comp: "dict | None") -> tuple[list[dict], str, list[str], list[str]]:
    """(the side-by-side rows, their metric, report.md's lines but the plots, its extra sections)."""
    deploy = blob.get("deploy") or []
    if not deploy:  # quality only, from the final metrics of teach / distill
        deploy = [{"model": role, **blob[role]["test"]} for role in ("teacher", "student")
                  if role in blob and "test" in blob[role]]
    metric = (headline_of(deploy[0]) if deploy else None) or "accuracy"
    active, fr = blob.get("active"), blob.get("frontier")
    lines = [f"# kdflow report: {run.name}", "", *overlap_md(blob, metric)]
    if deploy and "latency_ms_p50" in deploy[0]:
        lines += ["## Teacher vs student", "", _table_md(deploy), ""]
    elif deploy:
        lines += ["## Test quality", "", "| model | " + metric + " |", "|---|---|"]
        lines += [f"| {r['model']} | {r.get(metric, float('nan')):.4f} |" for r in deploy] + [""]
    for role in ("teacher", "student"):
        entry = blob.get(role)
        if entry:
            facts = {k: entry[k] for k in ("parameters", "best_epoch", "epochs_run", "train_seconds", "compression")
                     if k in entry}
            lines += [f"## {role}", "", "| " + " | ".join(facts) + " |", "|" + "---|" * len(facts),
                      "| " + " | ".join(str(v) for v in facts.values()) + " |", ""]
    extra = checks_md(blob) + teacher_usage_md(blob) + (frontier_md(fr) if fr else []) + (
        compare_md(comp) if comp else []) + (active_md(active, active.get("metric", "accuracy")) if active else [])
    lines += extra
    _page(run.name, deploy, metric, extra, [])  # the HTML's table reads the rows too: fail here, not half-way
    [(c["true"], c["predicted"], float(c["count"])) for r in deploy for c in r.get("top_confusions") or []]
    return deploy, metric, lines, extra


def _page(name: str, deploy: list[dict], metric: str, sections: list[str], images: list[Path]) -> str:
    """The self-contained HTML report: the side-by-side table, the Markdown sections, the plots inline."""
    def img(p: Path) -> str:
        data = base64.b64encode(p.read_bytes()).decode()
        return f'<figure><img alt="{p.stem}" src="data:image/png;base64,{data}"><figcaption>{p.stem}</figcaption></figure>'

    body = [f"<h1>kdflow report: {html.escape(name)}</h1>"]
    if deploy:
        keys = [k for k in ("model", metric, "f1_macro", "size_mb", "latency_ms_p50", "latency_ms_p95",
                            "throughput_per_s", "retention", "compression", "speedup_p50") if k in deploy[0]]
        body.append("<table><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>" + "".join(
            "<tr>" + "".join(f"<td>{_fmt(r[k])}</td>" for k in keys) + "</tr>" for r in deploy) + "</table>")
    if sections:
        body.append(md_to_html(sections))
    body += [img(p) for p in images]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>kdflow report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}"
            "</style></head><body>" + "\n".join(body) + "</body></html>")


def md_to_html(lines: list[str]) -> str:
    """The small Markdown subset the report writes: ``## headings``, ``|`` tables, ``**bold**`` paragraphs."""
    import re

    def inline(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    out, table = [], []

    def flush() -> None:
        if table:
            head, *rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table
                           if not re.fullmatch(r"\|[-:|\s]+\|", r.strip())]
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
            table.clear()
    for line in lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))
