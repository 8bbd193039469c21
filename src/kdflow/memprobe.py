"""Peak memory of inference, measured in a fresh process per model.

Inside one long-lived process the allocator reuses memory freed by the model
measured before, so resident-set growth reads ~0 for the second model. Here a
child process imports only what the form needs (``torch`` and the model's
module, or ``onnxruntime`` alone for ONNX), records its resident memory as the
baseline, loads the model, runs the batches and reports its high-water mark.

``peak_rss_mb`` is what the deployed process holds at its worst (runtime
included); ``peak_memory_mb`` is the part added by loading the model and running
inference (peak minus the baseline after imports).

Child usage (internal)::

    python -m kdflow.memprobe torch|onnx MODEL_FILE INPUTS.npz THREADS [MODULE,MODULE...]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def save_inputs(batches: Sequence[dict], path: "str | Path") -> Path:
    """Batches of named arrays (tensors or numpy) as one ``.npz`` (keys ``<i>/<name>``)."""
    flat = {f"{i}/{k}": np.asarray(v) for i, b in enumerate(batches) for k, v in b.items()}
    np.savez(path, **flat)
    return Path(path)


def _load_inputs(path: str) -> list[dict]:
    raw = np.load(path)
    out: dict[int, dict] = {}
    for key in raw.files:
        i, name = key.split("/", 1)
        out.setdefault(int(i), {})[name] = raw[key]
    return [out[i] for i in sorted(out)]


def _child(kind: str, model_file: str, inputs: str, threads: int, module: Optional[str]) -> dict:
    batches = _load_inputs(inputs)
    if kind == "onnx":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        base = _rss_mb()
        sess = ort.InferenceSession(model_file, opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        for b in batches:
            sess.run(None, {k: v.astype(np.int64) for k, v in b.items() if k in names})
    else:
        import importlib

        import torch
        torch.set_num_threads(threads)
        for name in filter(None, (module or "").split(",")):
            importlib.import_module(name)  # the model's classes: their import cost is not the model's
        base = _rss_mb()
        model = torch.load(model_file, weights_only=False, map_location="cpu").eval()
        with torch.inference_mode():
            for b in batches:
                model(**{k: torch.from_numpy(v) for k, v in b.items()})
    peak = _peak_mb()
    return {"peak_rss_mb": round(peak, 1), "baseline_mb": round(base, 1), "peak_memory_mb": round(peak - base, 1)}


def probe(kind: str, model_file: "str | Path", inputs_file: "str | Path", threads: int = 1,
          module: Optional[str] = None, timeout: float = 600) -> dict:
    """Run the child for one saved model; ``kind`` is ``torch`` (a pickled module) or ``onnx``."""
    cmd = [sys.executable, "-m", "kdflow.memprobe", kind, str(model_file), str(inputs_file), str(threads)]
    if module:
        cmd.append(module)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_memory_error": f"memory probe failed: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe_module(model, inputs_file: "str | Path", threads: int = 1) -> dict:
    """Pickle an in-memory PyTorch model to a temporary file and probe it in a fresh process."""
    import torch
    with tempfile.TemporaryDirectory(prefix="kdflow-mem-") as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(model, path)
        classes = sorted({type(m).__module__ for m in model.modules()})
        return probe("torch", path, inputs_file, threads, ",".join(classes))


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(_child(a[0], a[1], a[2], int(a[3]), a[4] if len(a) > 4 else None)))
