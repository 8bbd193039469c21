"""``report.md`` and a self-contained ``report.html`` (plots embedded) for a run folder.

Written from what the run folder already holds (``metrics.csv``, ``metrics.json``),
so it can be regenerated at any time: ``kdflow report runs/NAME``.
Plots (``plots/*.png``): training curves per role, teacher-vs-student bars of
quality / latency / size, and the student's most frequent confusions.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _rows(run: Path) -> list[dict]:
    path = run / "metrics.csv"
    return list(csv.DictReader(open(path))) if path.is_file() else []


def plot_curves(run: Path, out: Path) -> "Path | None":
    rows = _rows(run)
    if not rows:
        return None
    plt = _plt()
    metric = next((k for k in ("val_accuracy", "val_pearson") if k in rows[0]), None)
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
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


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
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusions(confusions: list[dict], out: Path) -> "Path | None":
    if not confusions:
        return None
    plt = _plt()
    labels = [f"{c['true']} → {c['predicted']}" for c in confusions][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1))
    ax.barh(labels, [c["count"] for c in confusions][::-1], color="#C44E52")
    ax.set(title="student: most frequent confusions (test)", xlabel="examples")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _table_md(rows: list[dict]) -> str:
    from .compare import table
    return table(rows)


def write_report(run: "str | Path") -> dict:
    """(Re)write ``plots/*.png``, ``report.md`` and ``report.html``; returns their paths."""
    run = Path(run)
    blob = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    plots = run / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    deploy = blob.get("deploy") or []
    metric = "accuracy" if not deploy or "accuracy" in deploy[0] else "pearson"
    if not deploy:  # quality only, from the final metrics of teach / distill
        deploy = [{"model": role, **blob[role]["test"]} for role in ("teacher", "student")
                  if role in blob and "test" in blob[role]]
        metric = "accuracy" if deploy and "accuracy" in deploy[0] else "pearson"
    student_row = next((r for r in deploy if r["model"] == "student"), {})
    images = [p for p in (plot_curves(run, plots / "curves.png"), plot_bars(deploy, metric, plots / "compare.png"),
                          plot_confusions(student_row.get("top_confusions", []), plots / "confusions.png")) if p]

    lines = [f"# kdflow report: {run.name}", ""]
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
    lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in images] + [""]
    (run / "report.md").write_text("\n".join(lines))

    def img(p: Path) -> str:
        data = base64.b64encode(p.read_bytes()).decode()
        return f'<figure><img alt="{p.stem}" src="data:image/png;base64,{data}"><figcaption>{p.stem}</figcaption></figure>'

    body = [f"<h1>kdflow report: {html.escape(run.name)}</h1>"]
    if deploy:
        keys = [k for k in ("model", metric, "f1_macro", "size_mb", "latency_ms_p50", "latency_ms_p95",
                            "throughput_per_s", "retention", "compression", "speedup_p50") if k in deploy[0]]
        body.append("<table><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>" + "".join(
            "<tr>" + "".join(f"<td>{_fmt(r[k])}</td>" for k in keys) + "</tr>" for r in deploy) + "</table>")
    body += [img(p) for p in images]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>kdflow report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}"
            "</style></head><body>" + "\n".join(body) + "</body></html>")
    (run / "report.html").write_text(page)
    return {"md": run / "report.md", "html": run / "report.html", "plots": images}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))
