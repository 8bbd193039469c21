"""Images (issue 14): a ResNet teacher distilled into a MobileNetV2 on MNIST-5k (and scikit-learn's digits).

    python bench/vision.py [--data mnist_5k] [--seeds 1,2,3] [--variants no_kd,kd,kd_at,kd_fitnets]
    python bench/vision.py --timing            # alone: size, p50 latency at batch 1, ONNX and int8 forms
    python bench/vision.py --table

The teacher (``configs/mnist.yaml``'s: ResNet-18 depths at half width, small-input stem) is trained once
with ``kdflow teach``; each variant is one ``kdflow distill`` of the same MobileNetV2 (width 0.25) per seed
(``train.seed``; the data split is fixed by ``data.seed``):

- ``no_kd``: labels only (``distill.alpha: 0``);
- ``kd``: Hinton KD (T 4, alpha 0.9), online (the images are augmented);
- ``kd_at``: KD + attention transfer on the last 3 stages (``layer_losses: {at: 30}``: the paper's β = 1000, halved,
  over the 16 positions of the 4x4 grid where the maps meet);
- ``kd_fitnets``: KD + FitNets hints on the last 3 stages through learned 1x1 projections (``{hidden: 1}``);
- ``budget_no_kd`` / ``budget_kd``: ``--budget`` labelled images only; KD adds the rest of the training
  images as a transfer set (``data.unlabelled``, an .npz this script writes), labelled by the teacher only.

Resumable: every (variant, seed) result goes into ``--results`` as soon as it is done; a later call skips it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "no_kd": {"distill": {"alpha": 0.0, "intermediate": False}},
    "kd": {"distill": {"intermediate": False}},
    "kd_at": {"distill": {"intermediate": True, "layer_losses": {"at": 30.0}}},
    "kd_fitnets": {"distill": {"intermediate": True, "layer_losses": {"hidden": 1.0}}},
    "budget_no_kd": {"distill": {"alpha": 0.0, "intermediate": False}},
    "budget_kd": {"distill": {"intermediate": False}},
}


def base_config(a) -> dict:
    import yaml
    cfg = yaml.safe_load(Path("configs/mnist.yaml").read_text())
    cfg["data"] = {"packaged": a.data, "augment": ["crop"], "crop_padding": 2}
    cfg["teach"]["epochs"] = a.teacher_epochs
    cfg["train"]["epochs"] = a.epochs
    cfg["run"] = {"name": f"vision-{a.data}", "output_dir": a.out, "quiet": True}
    return cfg


def merged(cfg: dict, extra: dict) -> dict:
    out = json.loads(json.dumps(cfg))
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


def transfer_set(cfg: dict, budget: int, folder: Path) -> dict:
    """``data`` overrides for the label-budget variants: ``budget`` labelled training images (the stratified
    sample ``data.max_train_examples`` draws) and the rest of the training split as an unlabelled .npz."""
    from kdflow.config import load_config
    from kdflow.data import load_data
    full = load_data(load_config(cfg).data)
    small = load_data(load_config(merged(cfg, {"data": {"max_train_examples": budget}})).data)
    kept = set(small.train.ids)
    rest = [i for i, key in enumerate(full.train.ids) if key not in kept]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"unlabelled-{budget}.npz"
    np.savez(path, images=np.stack([full.train.inputs["image"][i] for i in rest]),
             labels=np.zeros(len(rest), dtype=np.int64))
    return {"max_train_examples": budget, "unlabelled": str(path)}


def run_variant(cfg: dict, variant: str, seed: int, teacher: str, a) -> dict:
    import kdflow
    extra = merged(VARIANTS[variant], {"train": {"seed": seed},
                                       "run": {"name": f"{cfg['run']['name']}-{variant}-{seed}"},
                                       "model": {"teacher": {"kind": "vision", "name": teacher}}})
    if variant.startswith("budget"):
        data = {"max_train_examples": a.budget}
        if variant == "budget_kd":
            data = transfer_set(cfg, a.budget, Path(a.out) / "transfer")
        extra = merged(extra, {"data": data})
    start = time.time()
    entry = kdflow.distill(merged(cfg, extra), overwrite=True)
    return {"test": entry["test"], "validation": entry["validation"], "parameters": entry["parameters"],
            "best_epoch": entry["best_epoch"], "train_examples": entry.get("train_examples"),
            "seconds": round(time.time() - start, 1)}


def timing(cfg: dict, teacher: Path, student: Path) -> list:
    from kdflow.api import compare
    from kdflow.compare import MeasureOptions
    rows = compare(str(teacher), str(student), cfg, options=MeasureOptions(onnx=True, int8=True, memory=False))
    keep = ("model", "parameters", "size_mb", "latency_ms_p50", "throughput_per_s", "accuracy", "max_abs_diff")
    return [{k: r[k] for k in keep if k in r} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist_5k", choices=["mnist_5k", "digits"])
    ap.add_argument("--variants", default="no_kd,kd,kd_at,kd_fitnets")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--budget", type=int, default=500, help="labelled images of the budget variants")
    ap.add_argument("--out", default="runs/vision")
    ap.add_argument("--results", default="bench/results/vision.json")
    ap.add_argument("--timing", action="store_true", help="time the teacher and the first seed's kd student")
    ap.add_argument("--table", action="store_true", help="print the table of --results and exit")
    a = ap.parse_args()
    results_path = Path(a.results)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if a.table:
        return table(results)
    cfg = base_config(a)
    done = results.setdefault(a.data, {})

    def save(key: str, value) -> None:
        done[key] = value
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{time.strftime('%H:%M:%S')} {a.data} {key}: {json.dumps(value)[:300]}", flush=True)

    import kdflow
    run_dir = Path(a.out) / cfg["run"]["name"]
    if "teacher" not in done or not (run_dir / "teacher").is_dir():
        start = time.time()
        entry = kdflow.teach(cfg, overwrite=True)
        save("teacher", {"test": entry["test"], "validation": entry["validation"], "parameters": entry["parameters"],
                         "best_epoch": entry["best_epoch"], "seconds": round(time.time() - start, 1)})
    teacher = str(run_dir / "teacher")
    if a.timing:
        first = a.seeds.split(",")[0]
        return save("timing", timing(cfg, Path(teacher), Path(a.out) / f"{cfg['run']['name']}-kd-{first}" / "student"))
    for seed in map(int, a.seeds.split(",")):
        for variant in a.variants.split(","):
            if f"{variant}/{seed}" not in done:
                save(f"{variant}/{seed}", run_variant(cfg, variant, seed, teacher, a))


def table(results: dict) -> None:
    """Per data set: test accuracy of each variant (mean ± sd over seeds) and its share of the teacher's."""
    for data, done in results.items():
        t = done["teacher"]["test"]["accuracy"]
        print(f"\n{data}: teacher {t:.4f} ({done['teacher']['parameters']:,} parameters)")
        print("| variant | seeds | test accuracy | of the teacher | parameters | best epoch |")
        print("|---|---|---|---|---|---|")
        for variant in VARIANTS:
            runs = [v for k, v in done.items() if k.split("/")[0] == variant]
            if not runs:
                continue
            acc = np.array([r["test"]["accuracy"] for r in runs])
            print(f"| {variant} | {len(runs)} | {acc.mean():.4f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.4f} | "
                  f"{acc.mean() / t:.1%} | {runs[0]['parameters']:,} | "
                  f"{', '.join(str(r['best_epoch']) for r in runs)} |")
        for row in done.get("timing", []):
            print(row)


if __name__ == "__main__":
    main()
