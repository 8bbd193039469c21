"""The LLM teacher through a real OpenAI-compatible server (issue 32): ``N`` AG News test prompts sent to
``--base-url`` through ``kind: llm`` with ``base_url``, answers cached under ``--cache``; prints accuracy, usable
share, and the cost meter. Kill the server mid-run and run it again: the second run pays only for what the first
did not receive (BENCHMARKS.md, "An LLM as the teacher").

    /work/venv-llamacpp/bin/python -m llama_cpp.server --model SmolLM2-135M-Instruct.Q4_1.gguf --port 8081 --n_threads 1
    OMP_NUM_THREADS=1 python bench/llm_endpoint.py --n 80 --cache /tmp/kcache --model PATH.gguf
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kdflow.config import LLMSpec
from kdflow.data.features import RawTextFeaturizer
from kdflow.data.splits import Split
from kdflow.models import KINDS, BuildContext

LABELS = ["Business", "Sci/Tech", "Sports", "World"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=80)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--model", required=True, help="the server's model name")
    p.add_argument("--base-url", default="http://127.0.0.1:8081/v1")
    p.add_argument("--test", type=Path, default=Path("/work/llmbench/data/agnews/test.jsonl"))
    args = p.parse_args()
    rows = [json.loads(line) for line in args.test.read_text().splitlines()][: args.n]
    spec = LLMSpec(name=args.model, base_url=args.base_url, concurrency=1, verbalizers={"Sci/Tech": "Technology"},
                   template="Classify the news article into one of these categories: {labels}.\n\nArticle: {text}"
                            "\n\nCategory:", max_text_tokens=96, max_retries=2, retry_wait=0.2)
    teacher = KINDS["llm"].teacher(spec, BuildContext(LABELS, "classification", 96, cache_dir=args.cache, log=print))
    split = Split("test", [f"t{i}" for i in range(len(rows))], {"text": [r["text"] for r in rows]},
                  np.zeros(len(rows)))
    feat, started = RawTextFeaturizer(), time.time()
    try:
        logits = teacher(**feat.collate(feat.encode(split))).logits.numpy()
        print("accuracy", np.mean([LABELS[k] == r["label"] for k, r in zip(logits.argmax(1), rows)]),
              "usable", float((~np.isnan(logits).any(1)).mean()))
    except Exception as err:  # the server died: the cost meter still says what was paid
        print("stopped:", err)
    print("seconds", round(time.time() - started, 1), json.dumps(teacher.usage()))


if __name__ == "__main__":
    main()
