"""Images (issue 14): a ResNet teacher distilled into a MobileNetV2 on MNIST-5k (and scikit-learn's digits).

    python bench/vision.py [--data mnist_5k] [--seeds 1,2,3] [--variants no_kd,kd,kd_at,kd_fitnets]
    python bench/vision.py --timing            # alone: size, p50 latency at batch 1, ONNX and int8 forms
    python bench/vision.py --table
    python bench/vision.py --estimate configs/cifar10.yaml   # seconds per epoch of that recipe on this CPU
    python bench/vision.py --data digits --variants no_kd,kd,kd_at,kd_fitnets \
        --student '{"kind": "vision", "arch": "resnet", "hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}'

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

Every student runs all its epochs (``train.patience: null``) and keeps its best validation epoch.

Resumable: every (variant, seed) result goes into ``--results`` as soon as it is done; a later call skips it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# every student trains its full epochs and keeps its best validation epoch (train.patience: null): with 400
# validation images, early stopping after 5 flat epochs cut seeds short (kd seed 2 at epoch 11: 0.939)
VARIANTS = {
    "no_kd": {"distill": {"alpha": 0.0, "intermediate": False}},
    "kd": {"distill": {"intermediate": False}},
    "kd_at": {"distill": {"intermediate": True, "layer_losses": {"at": 30.0}}},
    "kd_fitnets": {"distill": {"intermediate": True, "layer_losses": {"hidden": 1.0}}},
    # 500 labels alone: 450 training images, so 100 epochs give it about the optimizer steps of budget_kd's
    # 15 epochs over 3,600 (a from-scratch MobileNetV2 scores chance for its first ~50 steps)
    "budget_no_kd": {"distill": {"alpha": 0.0, "intermediate": False}, "train": {"epochs": 100}},
    "budget_kd": {"distill": {"intermediate": False}},
}


def base_config(a) -> dict:
    import yaml
    cfg = yaml.safe_load(Path("configs/mnist.yaml").read_text())
    cfg["data"] = {"packaged": a.data, "augment": ["crop"], "crop_padding": 2}
    cfg["teach"]["epochs"] = a.teacher_epochs
    cfg["train"]["epochs"] = a.epochs
    cfg["run"] = {"name": f"vision-{a.data}", "output_dir": a.out, "quiet": True}
    if a.student:  # e.g. digits: at 8x8 px a MobileNetV2 at output stride 8 sees one position (0.21 on seed 1)
        cfg["model"]["student"] = json.loads(a.student)
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
    extra = merged(VARIANTS[variant], {"train": {"seed": seed, "patience": None, **VARIANTS[variant].get("train", {})},
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
    from kdflow.deploy.compare import MeasureOptions
    rows = compare(str(teacher), str(student), cfg, options=MeasureOptions(onnx=True, int8=True, memory=False))
    keep = ("model", "parameters", "size_mb", "latency_ms_p50", "throughput_per_s", "accuracy", "max_abs_diff")
    return [{k: r[k] for k in keep if k in r} for r in rows]


def estimate(path: str, images: int = 50_000, side: int = 32, steps: int = 4) -> dict:
    """Seconds per epoch of ``images`` for a config's teacher (its own training step) and student (an
    online distillation step: the teacher's forward with its stage hooks, the student's forward and
    backward), timed on random ``side`` px RGB batches of ``train.batch_size``."""
    import torch

    from kdflow.config import load_config
    from kdflow.data import ImagePreprocess
    from kdflow.distillation.distiller import Distiller, FeatureStudent, feature_widths
    from kdflow.distillation.layers import resolve_for
    from kdflow.models import KINDS, BuildContext
    cfg = load_config(path)
    labels = [str(i) for i in range(10)]
    ctx = BuildContext(labels, "classification", 128, ImagePreprocess([0.5] * 3, [0.25] * 3, 3))
    teacher = KINDS["vision"].teacher(cfg.model.teacher, ctx)
    student, _ = KINDS["vision"].student(cfg.model.student, BuildContext(labels, "classification", 128,
                                                                          ctx.tokenizer, teacher))
    bs = cfg.train.batch_size
    x = torch.randn(bs, 3, side, side)
    batch = {"index": torch.arange(bs), "inputs": {"pixel_values": x}, "teacher_inputs": {"pixel_values": x},
             "labels": torch.randint(0, 10, (bs,))}

    def seconds(step, model_) -> float:
        opt = torch.optim.AdamW(model_.parameters(), lr=1e-3)
        for i in range(steps + 1):
            if i == 1:
                start = time.perf_counter()
            loss = step()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / steps * images / bs

    t = seconds(lambda: torch.nn.functional.cross_entropy(teacher.train()(pixel_values=x).logits,
                                                          batch["labels"]), teacher)
    pairs = resolve_for(cfg.distill.layers, student, teacher, dict(cfg.distill.layer_losses)) \
        if cfg.distill.intermediate else []
    model = FeatureStudent(student, pairs, feature_widths(student, teacher, pairs, batch)) if pairs else student
    distiller = Distiller(teacher, cfg.distill.model_copy(update={"mode": "online"}), "classification", pairs)
    s = seconds(lambda: distiller(model.train(), batch)["loss"], model)
    return {"config": path, "images": images, "side": side, "batch_size": bs, "threads": torch.get_num_threads(),
            "teacher_s_per_epoch": round(t), "distill_s_per_epoch": round(s),
            "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
            "student_parameters": sum(p.numel() for p in student.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist_5k", choices=["mnist_5k", "digits"])
    ap.add_argument("--variants", default="no_kd,kd,kd_at,kd_fitnets")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--budget", type=int, default=500, help="labelled images of the budget variants")
    ap.add_argument("--student", help="model.student as JSON instead of configs/mnist.yaml's")
    ap.add_argument("--out", default="runs/vision")
    ap.add_argument("--results", default="bench/results/vision.json")
    ap.add_argument("--timing", action="store_true", help="time the teacher and the first seed's kd student")
    ap.add_argument("--table", action="store_true", help="print the table of --results and exit")
    ap.add_argument("--estimate", metavar="CONFIG", help="time a few steps of CONFIG's recipe at 32 px; no training")
    a = ap.parse_args()
    results_path = Path(a.results)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if a.table:
        return table(results)
    if a.estimate:
        out = estimate(a.estimate)
        results.setdefault("estimates", {})[a.estimate] = out
        results_path.write_text(json.dumps(results, indent=1))
        return print(json.dumps(out))
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
        if data == "estimates":
            print("\n" + "\n".join(json.dumps(v) for v in done.values()))
            continue
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
