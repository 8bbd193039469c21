"""Peak memory of inference, measured in a fresh process per model.

Inside one long-lived process the allocator reuses memory freed by the model
measured before, so resident-set growth reads ~0 for the second model. Here a
child process imports only what the form needs (``torch`` and the model's
module, or ``onnxruntime`` alone for ONNX), records its resident memory as the
baseline, loads the model, runs the batches and reports its high-water mark.

``peak_rss_mb`` is what the deployed process holds at its worst (runtime and
library code included); ``peak_memory_mb`` is the anonymous (heap) memory added by
loading the model and running inference: the highest ``RssAnon`` seen by a
sampling thread minus its value after the imports. Code pages that the first
call of each kernel faults in are left out of it: they vary from run to run and
are not the model's.

Child usage (internal)::

    python -m kdflow.deploy.memprobe torch|onnx MODEL_FILE INPUTS.npz THREADS [MODULE,MODULE...]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _anon_mb() -> float:
    """Anonymous resident memory (heap: weights, activations, arenas), without the code
    pages of the libraries, which the first call of each kernel faults in."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class AnonPeak:
    """Highest anonymous resident memory seen by a sampling thread (every ``every`` s)."""

    def __init__(self, every: float = 0.0005):
        self.every, self.peak, self._stop = every, 0.0, threading.Event()

    def __enter__(self) -> "AnonPeak":
        self.peak = _anon_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _anon_mb())
            time.sleep(self.every)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _anon_mb())


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
        with AnonPeak() as mem:
            base = mem.peak
            sess = ort.InferenceSession(model_file, opts, providers=["CPUExecutionProvider"])
            names = {i.name for i in sess.get_inputs()}
            for b in batches:
                sess.run(None, {k: v.astype(np.int64) if v.dtype.kind in "iu" else v for k, v in b.items()
                                if k in names})
    else:
        import importlib

        import torch
        torch.set_num_threads(threads)
        for name in filter(None, (module or "").split(",")):
            importlib.import_module(name)  # the model's classes: their import cost is not the model's
        with AnonPeak() as mem:
            base = mem.peak
            model = torch.load(model_file, weights_only=False, map_location="cpu").eval()
            with torch.inference_mode():
                for b in batches:
                    model(**{k: torch.from_numpy(v) for k, v in b.items()})
    return {"peak_rss_mb": round(_peak_mb(), 1), "baseline_anon_mb": round(base, 1),
            "peak_memory_mb": round(mem.peak - base, 1)}


def probe(kind: str, model_file: "str | Path", inputs_file: "str | Path", threads: int = 1,
          module: Optional[str] = None, timeout: float = 600) -> dict:
    """Run the child for one saved model; ``kind`` is ``torch`` (a pickled module) or ``onnx``."""
    cmd = [sys.executable, "-m", "kdflow.deploy.memprobe", kind, str(model_file), str(inputs_file), str(threads)]
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
