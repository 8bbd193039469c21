"""Which teacher layers matter: scores for every block, on a small labelled sample.

Two scores per block ``i`` (0-based), both on held-out examples (a validation
sample, never test):

* ``drop``: how much the teacher's accuracy falls when block ``i`` is skipped
  (the block removed from the layer list, everything else unchanged) — the
  teacher's own reliance on the block;
* ``probe``: accuracy of a logistic-regression probe (scikit-learn) fitted on the
  block's mean-pooled output for a training sample — how linearly decodable the
  task is at that depth.

``ranking`` orders the blocks by the chosen score, highest first (ties: the later
block first); ``distill.layers: auto:K`` distils the top ``K``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..data import input_batches, stratified_sample
from ..engine.run import Run
from ..errors import KdflowError
from ..metrics import tuned_quality
from ..models import block_list, fingerprint
from ..models.base import mean_over_tokens
from ..tasks import task_kind
from .distiller import use_eager_attention
from .layers import Taps, as_tokens, resolve_for, stage_paths


@torch.no_grad()
def _pooled_states(model: nn.Module, batches: list[dict]) -> list[np.ndarray]:
    """Per block: ``[N, D]`` mean of its output over real tokens (a CNN stage: over its grid)."""
    per_layer: Optional[list[list[np.ndarray]]] = None
    stages = stage_paths(model)
    for b in batches:
        if stages:
            with Taps(model, stages) as taps:
                model(**b)
            states = [as_tokens(taps.outputs[p]) for p in stages]
        else:
            states = model(**b, output_hidden_states=True).hidden_states[1:]
        mask = b.get("attention_mask")
        pooled = [mean_over_tokens(h.float(), mask).numpy() for h in states]
        per_layer = [[p] for p in pooled] if per_layer is None else [acc + [p] for acc, p in zip(per_layer, pooled)]
    return [np.concatenate(chunks) for chunks in per_layer or []]


@torch.no_grad()
def _accuracy(model: nn.Module, batches: list[dict], targets: np.ndarray) -> float:
    pred = np.concatenate([model(**b).logits.argmax(-1).numpy() for b in batches])
    return float((pred == targets).mean())


_accuracy.metric = "accuracy"  # what a score measures: score_layers names it in its results


def headline_score(task: str, names: Optional[list]) -> Callable[[nn.Module, list, np.ndarray], float]:
    """``score(model, batches, targets)``: the task kind's headline metric (classification: accuracy; multilabel:
    micro-F1 at the thresholds tuned on these examples; tagging: span F1), what ``drop`` measures the loss of."""
    kind = task_kind(task)
    if kind.classes:
        return _accuracy

    @torch.no_grad()
    def score(model: nn.Module, batches: list[dict], targets: np.ndarray) -> float:
        logits = np.concatenate([model(**b).logits.float().numpy() for b in batches])
        return float(tuned_quality(logits, targets, task, names)[1][kind.headline])
    score.metric = kind.headline
    return score


def score_layers(model: nn.Module, fit_batches: list[dict], fit_targets: np.ndarray, eval_batches: list[dict],
                 eval_targets: np.ndarray, method: str = "drop",
                 progress: Optional[Callable[[str], None]] = None,
                 score: Callable[[nn.Module, list, np.ndarray], float] = _accuracy) -> dict:
    """Scores of every block of a classifier ``model`` (frozen, CPU or its device); ``score``: the quality whose
    loss ``drop`` measures (accuracy by default, :func:`headline_score` for any task; its ``metric`` names it)."""
    metric = getattr(score, "metric", "score")
    if method not in ("drop", "probe"):
        raise KdflowError(f"layer scoring method '{method}' is unknown; use drop or probe")
    was = model.training
    model.eval()
    base = score(model, eval_batches, eval_targets)
    if stage_paths(model):  # CNN stages change width: none can be skipped, so only the probe scores them
        if method == "drop":
            raise KdflowError("A CNN's stages change width, so none can be skipped to score it; use "
                              "distill.layer_score: probe")
        n = len(stage_paths(model))
        return _with_probe(model, fit_batches, fit_targets, eval_batches, eval_targets,
                           {"blocks": n, "base_accuracy": base, "drop": None, "method": method,
                            "metric": metric}, progress)
    layers = block_list(model)
    drop = []
    try:
        for i in range(len(layers)):
            removed = layers[i]
            del layers[i]  # the model without block i (ModuleList renumbers the rest)
            try:
                drop.append(base - score(model, eval_batches, eval_targets))
            finally:
                layers.insert(i, removed)
            if progress:
                progress(f"block {i}: {metric} without it {base - drop[-1]:.4f}")
    finally:
        model.train(was)
    return _with_probe(model, fit_batches, fit_targets, eval_batches, eval_targets,
                       {"blocks": len(layers), "base_accuracy": base, "drop": drop, "method": method,
                        "metric": metric}, progress)


def _with_probe(model: nn.Module, fit_batches: list[dict], fit_targets: np.ndarray, eval_batches: list[dict],
                eval_targets: np.ndarray, scores: dict, progress: Optional[Callable[[str], None]]) -> dict:
    """``scores`` completed with every block's probe accuracy and the ranking by ``scores["method"]``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    if np.asarray(fit_targets).ndim != 1:  # label sets, tags per word: no class per example to probe for
        ranking = sorted(range(scores["blocks"]), key=lambda i: (scores["drop"][i], i), reverse=True)
        return {**scores, "probe": None, "ranking": ranking, "fit_examples": int(len(fit_targets)),
                "eval_examples": int(len(eval_targets))}
    was = model.training
    model.eval()
    probe = []
    fit_x, eval_x = _pooled_states(model, fit_batches), _pooled_states(model, eval_batches)
    model.train(was)
    for i, (fx, ex) in enumerate(zip(fit_x, eval_x)):
        scaler = StandardScaler().fit(fx)
        clf = LogisticRegression(max_iter=500).fit(scaler.transform(fx), fit_targets)
        probe.append(float(clf.score(scaler.transform(ex), eval_targets)))
        if progress:
            progress(f"block {i}: probe accuracy {probe[-1]:.4f}")
    score = scores["drop"] if scores["method"] == "drop" else probe
    ranking = sorted(range(scores["blocks"]), key=lambda i: (score[i], i), reverse=True)
    return {**scores, "probe": probe, "ranking": ranking, "fit_examples": int(len(fit_targets)),
            "eval_examples": int(len(eval_targets))}


def plot_scores(scores: dict, path: "str | Path") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = scores["blocks"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].bar(range(n), scores["drop"] or [0.0] * n, color="#c44e52")
    if scores["drop"] is None:
        axes[0].text(0.5, 0.5, "CNN stages cannot be skipped:\nscored by probe only", ha="center", va="center",
                     transform=axes[0].transAxes)
    metric = scores.get("metric", "accuracy")
    axes[0].set(title=f"{metric} lost without the block", xlabel="teacher block", ylabel=f"{metric} drop")
    axes[1].bar(range(n), scores["probe"] or [0.0] * n, color="#4c72b0")
    if scores["probe"] is None:
        axes[1].text(0.5, 0.5, "no class per example:\nscored by drop only", ha="center", va="center",
                     transform=axes[1].transAxes)
    axes[1].set(title="linear probe on the block's output", xlabel="teacher block", ylabel="probe accuracy",
                ylim=(0, 1))
    for ax in axes:
        ax.set_xticks(range(n))
    top = set(scores["ranking"][:3])
    for i in top:
        axes[0 if scores["method"] == "drop" else 1].patches[i].set_edgecolor("black")
        axes[0 if scores["method"] == "drop" else 1].patches[i].set_linewidth(2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_scores(scores: dict, folder: "str | Path", fingerprint: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "layers.json"
    path.write_text(json.dumps({**scores, "teacher_fingerprint": fingerprint}, indent=2))
    plot_scores(scores, folder / "layers.png")
    return path


def load_scores(folder: "str | Path", fingerprint: str, method: str) -> Optional[dict]:
    path = Path(folder) / "layers.json"
    if not path.is_file():
        return None
    blob = json.loads(path.read_text())
    if blob.get("teacher_fingerprint") != fingerprint:
        return None
    score = blob[method]  # both scores are stored: re-rank by the one asked for
    return {**blob, "method": method,
            "ranking": sorted(range(blob["blocks"]), key=lambda i: (score[i], i), reverse=True)}


def teacher_block_scores(run: "Run", teacher: nn.Module, feat) -> dict:
    """The teacher's block scores, computed once per teacher (fingerprint) and kept in ``<run>/layers``."""
    dc, d = run.cfg.distill, run.data
    kind = task_kind(d.task)
    if not kind.named:
        raise KdflowError(f"layer scoring (auto:K, kdflow layers) scores a teacher's labels, and {d.task} has none; "
                          "give the layers as a list (distill.layers: [..]) or last:K")
    if not kind.classes and dc.layer_score == "probe":
        raise KdflowError(f"distill.layer_score probe fits a classifier to one class per example, and {d.task} has "
                          "other targets; use distill.layer_score: drop")
    fp = fingerprint(teacher, f"max_length={run.cfg.data.max_length};n={dc.layer_score_examples}")
    folder = run.cfg.run_dir / "layers"
    method = dc.layer_score
    if stage_paths(teacher) and method == "drop":
        method = "probe"
        run.info("[layers] a CNN's stages change width, so none can be skipped: scored by a linear probe "
                 "(distill.layer_score: probe)")
    found = load_scores(folder, fp, method)
    if found is not None:
        run.info(f"[layers] block scores from {folder / 'layers.json'}; ranking {found['ranking']}")
        return found
    n = dc.layer_score_examples
    labelled = d.train.subset(d.train.labelled)
    by_class = kind.classes
    fit_part = labelled.subset(stratified_sample(labelled.targets, min(n, len(labelled)), run.cfg.data.seed,
                                                 by_class))
    ev = d.validation
    eval_part = ev.subset(stratified_sample(ev.targets, n, run.cfg.data.seed, by_class)) if len(ev) > n else ev
    teacher = teacher.cpu().eval()
    run.info(f"[layers] scoring the teacher's blocks on {len(fit_part)} train / {len(eval_part)} validation "
             "examples")
    scores = score_layers(teacher, input_batches(fit_part, feat, 64), fit_part.targets,
                          input_batches(eval_part, feat, 64), eval_part.targets, method,
                          progress=lambda m: run.info(f"[layers] {m}"), score=headline_score(d.task, d.label_names))
    if run.acc.is_main_process:
        save_scores(scores, folder, fp)
    run.info(f"[layers] ranking by {method}: {scores['ranking']}")
    return scores


def layer_map(run: "Run", teacher: nn.Module, student: nn.Module, t_feat) -> list:
    """The resolved layer map of ``distill.layers`` (``auto:K`` scores the teacher's blocks first)."""
    dc = run.cfg.distill
    ranking = None
    if isinstance(dc.layers, str) and dc.layers.startswith("auto:"):
        ranking = teacher_block_scores(run, teacher, t_feat)["ranking"]
    pairs = resolve_for(dc.layers, student, teacher, dict(dc.layer_losses), ranking)
    if not pairs:
        raise KdflowError("distill.intermediate is on but the layer map is empty: give distill.layer_losses a "
                          "positive weight (hidden, attention, pkd, cosine or at)")
    cnn = [side for side, m in (("teacher", teacher), ("student", student)) if stage_paths(m)]
    if cnn and any(p.kind == "attention" for p in pairs):
        raise KdflowError(f"The {cnn[0]}'s stages are convolutional and have no attention maps; for CNNs use "
                          "attention transfer: distill.layer_losses {hidden: 1, at: 30} (or drop attention)")
    if any(p.kind == "attention" for p in pairs):
        use_eager_attention(teacher)
        use_eager_attention(student)
    run.info("[distill] layer map (student block <- teacher block, kind x weight): "
             + "; ".join(f"{p.student}<-{p.teacher} {p.kind}x{p.weight:g}" for p in pairs))
    return pairs


__all__ = ["score_layers", "plot_scores", "save_scores", "load_scores", "teacher_block_scores", "layer_map"]
