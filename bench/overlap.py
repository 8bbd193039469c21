"""How much of each real data set's held-out splits repeats its own training file: the measurement behind the
leakage rule's threshold (``kdflow.data.leakage.LEAK_SHARE``).

Each data set is read by kdflow's own loaders and counted by the rule itself (:func:`kdflow.data.leakage.overlaps`:
exact, and once case, punctuation and spacing are ignored), against the training data as given. Prints a
Markdown table and writes ``bench/results/overlap.json``.

    python bench/overlap.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kdflow.config import DataConfig  # noqa: E402
from kdflow.data import load_data  # noqa: E402
from kdflow.data.leakage import LEAK_SHARE, overlaps  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "overlap.json"


def sets(root: Path) -> dict[str, dict]:
    g = root / "glue"
    return {
        "CLINC150 full": {"path": str(root / "clinc150" / "data_full.json")},
        "CLINC150 small": {"path": str(root / "clinc150" / "data_small.json")},
        "CLINC150 imbalanced": {"path": str(root / "clinc150" / "data_imbalanced.json")},
        "SST-2 (validation = a split of GLUE train; test = GLUE dev)": {
            "train": str(root / "sst2" / "train.tsv"), "validation": str(root / "sst2" / "validation.tsv"),
            "test": str(root / "sst2" / "test.tsv"), "text_column": "sentence"},
        "AG News": {"train": str(root / "agnews" / "train.tsv"), "test": str(root / "agnews" / "test.tsv"),
                    "header": False, "columns": ["text", "label"]},
        "RTE": {"glue": "rte", "train": str(g / "rte" / "train.tsv"), "test": str(g / "rte" / "dev.tsv")},
        "MRPC": {"glue": "mrpc", "train": str(g / "mrpc" / "msr_paraphrase_train.txt"),
                 "test": str(g / "mrpc" / "msr_paraphrase_test.txt")},
        "STS-B": {"glue": "stsb", "train": str(g / "stsb" / "sts-train.csv"),
                  "validation": str(g / "stsb" / "sts-dev.csv"), "test": str(g / "stsb" / "sts-test.csv")},
        "CoLA": {"glue": "cola", "train": str(g / "cola" / "train.tsv"),
                 "test": str(g / "cola" / "dev_in_domain.tsv"),
                 "extra_tests": {"out_of_domain": str(g / "cola" / "dev_out_of_domain.tsv")}},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="../shared/data")
    args = p.parse_args()
    rows = []
    for name, spec in sets(Path(args.data_root)).items():
        d = load_data(DataConfig(**spec))
        found = overlaps(d)
        for split, part in [("validation", d.validation), ("test", d.test),
                            *((f"test_{k}", v) for k, v in d.extra_tests.items())]:
            if part is None or (split == "validation" and d.validation_from_train):
                continue
            o = found.get(split)
            rows.append({"data": name, "split": split, "examples": len(part), "overlapping": o.count if o else 0,
                         "exact": len(o.exact) if o else 0, "normalised_only": len(o.near) if o else 0,
                         "share": round(o.share, 4) if o else 0.0, "refused": bool(o and o.too_many)})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"threshold": LEAK_SHARE, "rows": rows}, indent=2))
    print("| data | held-out split | examples | in the training data | exact | normalised only | share | refused |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['data']} | {r['split']} | {r['examples']:,} | {r['overlapping']} | {r['exact']} | "
              f"{r['normalised_only']} | {r['share']:.2%} | {'yes' if r['refused'] else 'no'} |")


if __name__ == "__main__":
    main()
