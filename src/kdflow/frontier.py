"""``kdflow frontier CONFIG``: train a family of students, measure their deployed forms, draw the
accuracy / latency / size front, and keep the smallest student that meets a budget.

The family is every ``frontier.depths`` × ``frontier.widths`` student built from the
teacher with the recipe (its blocks and embeddings, PCA when narrower, pruned
vocabulary). The teacher's outputs are cached once (offline distillation) and every
candidate trains on them; with ``distill.intermediate`` each also matches the teacher's
``distill.layers`` (the teacher then runs on each batch for its layer outputs).
Successive halving (``frontier.rungs``, ``frontier.eta``, :func:`kdflow.deploy.pareto.halve`)
stops hopeless candidates early; the survivors train to
``train.epochs`` (or early stopping), and each one's forms (``frontier.forms``: PyTorch,
int8, ONNX, ONNX-int8) are measured on validation. With ``--retention``, ``--latency-ms``
or ``--size-mb`` the chosen student (validation only) becomes the run's ``student/`` and
is scored once on test beside the teacher. Everything lands in ``<run>/frontier/``
(``state.json`` after every step: ``--resume`` goes on where it stopped, and a finished
frontier re-selects for a new budget without training).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

from . import models, pipeline
from .config import HFSpec, load_config, same_setting
from .deploy.compare import Bench, Contestant, MeasureOptions, relate, student_forms, teacher_row
from .deploy.measure import files_size_mb
from .deploy.pareto import Budget, halve, pareto_front, select
from .distillation.critical import layer_map
from .distillation.distiller import Distiller
from .distillation.teacher_cache import attach_targets
from .engine.checkpoint import has_checkpoint
from .engine.runfolder import kept
from .engine.runlog import update_metrics
from .engine.train import FitJob, fit, make_accelerator
from .errors import KdflowError

FORM_SUFFIX = {"pytorch": "", "int8": "-int8", "onnx": "-onnx", "onnx-int8": "-onnx-int8"}


def family(cfg, teacher) -> dict[str, dict]:
    """Name -> student sizes for every depth × width of ``cfg.frontier`` (heads keep the teacher's
    head width, the feed-forward layer its ratio to the width)."""
    fc, tc = cfg.frontier, getattr(teacher, "config", None)
    if tc is None or not hasattr(tc, "num_hidden_layers"):
        raise KdflowError("kdflow frontier builds students of the teacher's family, which needs an hf teacher "
                          "(model.teacher.kind: hf)")
    head_dim, ratio = tc.hidden_size // tc.num_attention_heads, tc.intermediate_size / tc.hidden_size
    out = {}
    for width in fc.widths:
        w = width or tc.hidden_size
        if w > tc.hidden_size or w % head_dim:
            raise KdflowError(f"frontier.widths holds {w}, which must be at most the teacher's width "
                              f"{tc.hidden_size} and a multiple of its head width {head_dim}; fix frontier.widths")
        for depth in fc.depths:
            if depth > tc.num_hidden_layers or (depth == tc.num_hidden_layers and w == tc.hidden_size):
                raise KdflowError(f"frontier.depths holds {depth}, but a student at width {w} needs fewer blocks "
                                  f"than the teacher's {tc.num_hidden_layers}; fix frontier.depths")
            out[f"L{depth}-H{w}"] = {"num_layers": depth, "hidden_size": w, "num_heads": w // head_dim,
                                     "intermediate_size": round(ratio * w)}
    return out


def check(cfg) -> None:
    """Settings the frontier cannot honour, refused before any work."""
    dc = cfg.distill
    if dc.mode != "offline":
        raise KdflowError(f"kdflow frontier trains every student on the teacher's cached outputs, so it needs "
                          f"distill.mode offline (got {dc.mode}); set distill.mode: offline")
    if dc.extra_teachers:
        raise KdflowError("kdflow frontier distils one teacher; drop distill.extra_teachers")
    if cfg.model.student.kind == "vision":
        raise KdflowError("kdflow frontier builds Transformer students of the teacher's family; for images, "
                          "compare students with kdflow distill and kdflow export (one run per student)")
    if cfg.model.student.kind != "hf" or cfg.model.student.name:
        raise KdflowError("kdflow frontier builds its own students from the teacher (frontier.depths × widths); "
                          "drop model.student.name and kind (or set kind: hf)")
    if any(r >= cfg.train.epochs for r in cfg.frontier.rungs):
        raise KdflowError(f"frontier.rungs {cfg.frontier.rungs} must all be below train.epochs "
                          f"({cfg.train.epochs}); lower the rungs or raise train.epochs")
    warmup = cfg.train.warmup_ratio * cfg.train.epochs
    if cfg.frontier.rungs and cfg.frontier.rungs[0] <= warmup:
        # measured on CLINC150: after a 1-epoch warmup, students copied from the teacher (lr 1e-4) trail
        # random-block ones (lr 1e-3) that they beat by 10 points later; a rung there stops the wrong ones
        raise KdflowError(f"frontier.rungs starts at epoch {cfg.frontier.rungs[0]}, inside the learning-rate warmup "
                          f"(train.warmup_ratio x train.epochs = {warmup:g} epochs), where students still warming "
                          "up cannot be compared; start the rungs after it")


class Frontier:
    """One frontier run: its run, teacher, state file and candidates (see the module docstring)."""

    def __init__(self, config, overrides: Optional[list[str]], resume: bool, overwrite: bool):
        cfg = load_config(config, overrides)
        check(cfg)
        self.cfg, self.resume = cfg, resume
        self.run = pipeline.setup(cfg, cfg.train, "frontier", resume, overwrite)
        pipeline.with_transfer_set(self.run)
        self.teacher = pipeline.load_teacher(self.run)
        self.t_feat = pipeline.featurizer(self.run, self.teacher.tokenizer)
        self.folder = cfg.run_dir / "frontier"
        self.metric = cfg.train.metric
        sizes = family(cfg, self.teacher.model)
        signature = {"candidates": sizes, "rungs": cfg.frontier.rungs, "eta": cfg.frontier.eta,
                     "epochs": cfg.train.epochs, "train_examples": len(self.run.data.train),
                     "temperature": cfg.distill.temperature, "alpha": cfg.distill.alpha,
                     "forms": cfg.frontier.forms,
                     "intermediate": {"layers": cfg.distill.layers, "losses": cfg.distill.layer_losses}
                     if cfg.distill.intermediate else None}  # a state saved before this key reads None too
        self.state = self._load_state(signature, sizes)

    # ------------------------------------------------------------ state
    def _load_state(self, signature: dict, sizes: dict) -> dict:
        path = self.folder / "state.json"
        if self.resume and path.is_file():
            state = json.loads(path.read_text())
            before = state["signature"]
            changed = [k for k in {**before, **signature} if not same_setting(before.get(k), signature.get(k))]
            if changed:
                raise KdflowError(f"Cannot resume the frontier: {changed[0]} changed since it started; resume with the "
                                  "same settings, or --overwrite to start again")
            self.run.info(f"[frontier] resumed: {sum(c['status'] == 'trained' for c in state['candidates'].values())}"
                          f" of {len(sizes)} candidates trained")
            return state
        return {"signature": signature, "rung": 0, "target": None, "teacher": None,
                "candidates": {n: {"sizes": s, "status": "alive", "scores": {}, "note": "", "rows": []}
                               for n, s in sizes.items()}}

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.folder / "state.json")

    # ------------------------------------------------------------ training
    def train(self, name: str, until: Optional[int]) -> None:
        """Train candidate ``name`` up to epoch ``until`` (None: to the end), from its checkpoint if any."""
        cand, cfg, d = self.state["candidates"][name], self.cfg, self.run.data
        spec = HFSpec(**cand["sizes"])
        ccfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"student": spec})})
        crun = pipeline.Run(ccfg, d, make_accelerator(cfg.train), self.run.log)
        student, s_tok = pipeline.build_student(crun, self.teacher.model, self.teacher.tokenizer)
        s_feat = pipeline.featurizer(crun, s_tok)
        dc = cfg.distill
        pairs = layer_map(crun, self.teacher.model, student, self.t_feat) if dc.intermediate and dc.alpha > 0 else []
        distiller = Distiller(self.teacher.model, dc, d.task, pairs)
        from .data import train_loader
        train_dl = train_loader(d.train, s_feat, self.t_feat, cfg.train.batch_size, cfg.train.seed)
        attach_targets(crun, distiller, self.teacher.tokenizer, self.t_feat, False)
        model = pipeline.with_projections(crun, student, distiller, train_dl) if pairs else student
        ckpt = self.folder / name / "checkpoints"
        job = FitJob(f"frontier-{name}", pipeline.train_settings(crun, cfg.train, "student", spec, student), ckpt,
                     has_checkpoint(ckpt), {"sizes": cand["sizes"]},
                     stop_after=until)
        result = fit(model, distiller, train_dl,
                     pipeline.selection_fn(crun, d.validation, s_feat, cfg.train.eval_batch_size), job, crun.acc,
                     self.run.log)
        cand["scores"][str(result.epochs_run)] = result.best_metric
        cand["parameters"] = models.count_parameters(student)
        if result.finished:
            trained = crun.acc.unwrap_model(model)
            models.save_model(trained.student if pairs else trained, self.folder / name / "model", s_tok,
                              d.label_names, d.task)
            cand.update(status="trained", best_epoch=result.best_epoch + 1, epochs_run=result.epochs_run)
            self.run.info(f"[frontier] {name} trained: {cand['parameters']:,} parameters, best validation "
                          f"{self.metric} {result.best_metric:.4f} at epoch {result.best_epoch + 1}")
        self.save()

    def rungs(self, budget: Budget) -> None:
        """Successive halving over the rungs, then every survivor to the end."""
        fc, cands = self.cfg.frontier, self.state["candidates"]
        target = budget.retention * self.teacher_score() if budget.retention is not None else None
        for k, rung in enumerate(fc.rungs):
            if k < self.state["rung"]:
                continue
            alive = [n for n, c in cands.items() if c["status"] == "alive"]
            self.run.info(f"[frontier] rung {k + 1} of {len(fc.rungs)}: {len(alive)} candidates to epoch {rung} "
                          f"({', '.join(alive)})")
            for name in alive:
                self.train(name, rung)
            alive = [n for n in alive if cands[n]["status"] == "alive"]
            stop = halve({n: (cands[n]["parameters"], _last(cands[n]["scores"])) for n in alive}, fc.eta, target)
            for n, why in stop.items():
                cands[n].update(status="stopped", note=f"stopped after epoch {rung}: {why}")
                self.run.info(f"[frontier] {n} {cands[n]['note']}")
            self.state.update(rung=k + 1, target=target)
            self.save()
        left = [n for n, c in cands.items() if c["status"] == "alive"]
        if left:
            self.run.info(f"[frontier] {len(left)} candidates to the end (train.epochs {self.cfg.train.epochs}, "
                          f"patience {self.cfg.train.patience}): {', '.join(left)}")
        for name in left:
            self.train(name, None)

    # ------------------------------------------------------------ measuring
    def bench(self, split) -> Bench:
        forms = set(self.cfg.frontier.forms)
        options = MeasureOptions(onnx=bool(forms & {"onnx", "onnx-int8"}), int8=bool(forms & {"int8", "onnx-int8"}),
                                 memory=False)
        return Bench(split, self.run.data.task, self.run.data.label_names, options)

    def teacher_contestant(self) -> Contestant:
        own = self.cfg.run_dir / "teacher"
        size = files_size_mb(own) if own.is_dir() else \
            sum(p.numel() * p.element_size() for p in self.teacher.model.parameters()) / 2 ** 20
        return Contestant("teacher", self.teacher.model, self.t_feat, size)

    def teacher_score(self) -> float:
        if self.state["teacher"] is None:
            self.state["teacher"] = _plain(teacher_row(self.teacher_contestant(), self.bench(self.run.data.validation)))
            self.save()
        return self.state["teacher"][self.metric]

    def measure(self) -> list[dict]:
        """Every trained candidate's forms on validation (measured once; kept in the state)."""
        self.teacher_score()
        rows = []
        for name, cand in self.state["candidates"].items():
            if cand["status"] != "trained":
                continue
            if not cand["rows"]:
                cand["rows"] = self.forms(name, self.run.data.validation, self.state["teacher"])
                self.save()
            rows += cand["rows"]
        return rows

    def forms(self, name: str, split, teacher: dict) -> list[dict]:
        """The forms of ``frontier.forms`` of candidate ``name``, measured on ``split``, related to the
        ``teacher``'s row on the same split."""
        folder = self.folder / name / "model"
        model, tok, _, _ = models.load_saved(folder)
        c = Contestant(name, model, pipeline.featurizer(self.run, tok), files_size_mb(folder))
        wanted = {name + FORM_SUFFIX[f] for f in self.cfg.frontier.forms}
        measured = [r for r in student_forms(c, self.bench(split), self.folder / name / "export") if r["model"] in wanted]
        rows = relate([dict(teacher)] + measured, self.metric)[1:]
        for r in rows:
            r.update(candidate=name, form=next(f for f in self.cfg.frontier.forms if r["model"] == name + FORM_SUFFIX[f]))
        return [_plain(r) for r in rows]


def _last(scores: dict) -> float:
    return scores[max(scores, key=int)]


def _plain(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def frontier(config, overrides: Optional[list[str]] = None, budget: Optional[Budget] = None, resume: bool = False,
             overwrite: bool = False) -> dict:
    """Run (or resume) the frontier; with a ``budget``, choose and save the run's student. Returns the summary
    written to ``metrics.json`` under ``frontier``."""
    budget = budget or Budget()
    if budget.retention is not None and not 0 < budget.retention <= 1.5:
        raise KdflowError(f"--retention is a fraction of the teacher's score, e.g. 0.99; got {budget.retention}")
    cfg = load_config(config, overrides)
    with kept(cfg.run_dir):  # a failure before the first trained rung leaves the run folder as it was
        return _frontier(cfg, budget, resume, overwrite)


def _frontier(cfg, budget: Budget, resume: bool, overwrite: bool) -> dict:
    job = Frontier(cfg, None, resume, overwrite)
    job.rungs(budget)
    rows = job.measure()
    summary = _summary(job, rows, budget)
    if budget.given:
        summary["chosen"] = _choose(job, rows, budget)
    update_metrics(job.cfg.run_dir, {"frontier": summary})
    pipeline.write_report(job.run)
    return summary


def _summary(job: Frontier, rows: list[dict], budget: Budget) -> dict:
    front = pareto_front([(r["latency_ms_p50"], r[job.metric]) for r in rows])
    for i, r in enumerate(rows):
        r["on_front"] = i in front
    cands = job.state["candidates"]
    job.run.info(f"[frontier] {sum(c['status'] == 'trained' for c in cands.values())} of {len(cands)} students "
                 f"trained, {len(rows)} forms measured, {len(front)} on the front (validation {job.metric} vs p50)")
    return {"metric": job.metric, "split": "validation", "teacher": job.state["teacher"], "rows": rows,
            "candidates": {n: {k: v for k, v in c.items() if k != "rows"} for n, c in cands.items()},
            "budget": budget.describe() or None}


def _choose(job: Frontier, rows: list[dict], budget: Budget) -> dict:
    """Save the chosen candidate as the run's student and score it once on test beside the teacher."""
    teacher_score = job.state["teacher"][job.metric]
    i = select(rows, budget, job.metric, teacher_score)
    if i is None:
        best = max(rows, key=lambda r: r[job.metric], default=None)
        update_metrics(job.cfg.run_dir, {"frontier": _summary(job, rows, budget)})
        pipeline.write_report(job.run)
        raise KdflowError(f"No student of the frontier meets {budget.describe()} on validation (the best, "
                          f"{best['model'] if best else 'none'}, keeps {best['retention'] if best else 0:.1%} of the "
                          f"teacher's {job.metric}); relax the budget, or widen frontier.depths / widths and "
                          "--overwrite. The front is in the report.")
    row = rows[i]
    name, out = row["candidate"], job.cfg.run_dir / "student"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(job.folder / name / "model", out)
    job.run.info(f"[frontier] chosen for {budget.describe()}: {row['model']} ({row['form']}), validation "
                 f"{job.metric} {row[job.metric]:.4f} ({row['retention']:.1%} of the teacher), {row['size_mb']:.1f} MB, "
                 f"p50 {row['latency_ms_p50']:.2f} ms; saved to {out}")
    test, deploy = job.run.data.test, []
    if test is not None:  # scored once, for the chosen student only
        t_row = _plain(teacher_row(job.teacher_contestant(), job.bench(test)))
        deploy = [t_row] + job.forms(name, test, t_row)
        update_metrics(job.cfg.run_dir, {"deploy": deploy})
    model, tok, _, _ = models.load_saved(out)
    cand = job.state["candidates"][name]
    entry = pipeline.final_metrics(job.run, model, pipeline.featurizer(job.run, tok), None, chosen_by=
                                   f"kdflow frontier, {budget.describe()}: {row['model']} ({row['form']})",
                                   best_epoch=cand["best_epoch"], epochs_run=cand["epochs_run"],
                                   compression=round(job.state["teacher"]["parameters"] / cand["parameters"], 2))
    job.run.log.final("student", entry)
    return {"candidate": name, "form": row["form"], "validation": row, "test": deploy, "student": str(out)}


__all__ = ["family", "check", "Frontier", "frontier", "FORM_SUFFIX"]
