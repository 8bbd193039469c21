"""Deployable forms of a model: ONNX (dynamic batch axis; sequence too, except for images) and int8.

Every exported form is checked against the PyTorch model on real batches (max
absolute logit difference) and measured like the original by :mod:`kdflow.deploy.measure`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import KdflowError


class _LogitsOnly(nn.Module):
    """Positional inputs in, logits out: the signature ONNX export wants."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args))).logits


def _need(module: str, extra: str = "onnx"):
    try:
        return __import__(module)
    except ImportError:
        raise KdflowError(f"Export needs the '{module}' package: pip install 'kdflow[{extra}]'") from None


def export_onnx(model: nn.Module, example: dict, path: "str | Path", opset: int = 17) -> Path:
    """Write ``model`` as ONNX with a dynamic ``batch`` axis on every input (and ``sequence`` on all but images)."""
    _need("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(example)
    model = model.eval()
    # tokens [B, L] and sequences [B, L, D]: batch and sequence vary; images [B, C, H, W]: the batch only
    axes = {n: {0: "batch"} if example[n].dim() == 4 else {0: "batch", 1: "sequence"} for n in names}
    if "word_mask" in axes:  # token tagging: one output per word, as many words as word_mask has columns
        axes["word_mask"] = {0: "batch", 1: "words"}
    axes["logits"] = {0: "batch", 1: "words"} if "word_mask" in axes else {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter from transformers' mask helpers
        # eval() on the wrapper: export restores its mode afterwards, recursively, and a new Module is in
        # training mode, which would leave the model with dropout on
        torch.onnx.export(_LogitsOnly(model, names).eval(), tuple(example[n] for n in names), str(path),
                          input_names=names, output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          dynamo=False)
    return path


def ort_session(path: "str | Path", threads: int = 1):
    ort = _need("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_runner(session) -> Callable[[dict], np.ndarray]:
    wanted = {i.name for i in session.get_inputs()}

    def run(inputs: dict) -> np.ndarray:
        feed = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in inputs.items() if k in wanted}
        return session.run(["logits"], feed)[0]
    return run


def max_abs_diff(reference: Callable[[dict], object], other: Callable[[dict], object], batches: Sequence[dict]) -> float:
    worst = 0.0
    with torch.inference_mode():
        for b in batches:
            a = np.asarray(reference(b), dtype=np.float64)
            o = np.asarray(other(b), dtype=np.float64)
            worst = max(worst, float(np.abs(a - o).max()))
    return worst


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 with one fp32 scale per row (symmetric, weight-only).

    ``w[i] ~= q[i] * scale[i]`` with ``scale[i] = max|w[i]| / 127``; a lookup gathers the
    int8 rows and rescales them, so the table takes a quarter of its fp32 size and the
    error per element is at most ``scale[i] / 2``. PyTorch's dynamic quantization covers
    only ``nn.Linear``; in a small text student the embedding table is most of the bytes.
    """

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        w = embedding.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.padding_idx = embedding.padding_idx
        self.num_embeddings, self.embedding_dim = w.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].float() * self.scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def quantize_embeddings_int8(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Embedding`` of ``model`` (in place) by an :class:`Int8Embedding`."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Embedding):
                setattr(parent, child_name, Int8Embedding(child))
    return model


def quantize_torch_int8(model: nn.Module, embeddings: bool = True) -> nn.Module:
    """int8 dynamic quantization of every ``nn.Linear`` (weights int8 with one scale per output
    channel, activations quantized on the fly) and, with ``embeddings``, int8 embedding tables
    (:class:`Int8Embedding`). A copy."""
    import copy

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    with warnings.catch_warnings():  # torch's notice that its quantized dtypes are deprecated, once per layer
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        q = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return quantize_embeddings_int8(q) if embeddings else q


def quantize_onnx_int8(src: "str | Path", dst: "str | Path") -> Path:
    """int8 dynamic quantization of an ONNX model's weights (MatMul, Gemm, the embedding Gather)
    with ONNX Runtime, one scale per output channel: on CLINC150 per-tensor scales cost the
    4-layer student 0.18 points of accuracy, per-channel scales none (BENCHMARKS.md)."""
    _need("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice (for static image models) on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return Path(dst)


def save_torch_int8(model: nn.Module, path: "str | Path") -> Path:
    """The quantized state dict (packed int8 weights) as one file, to measure its size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
