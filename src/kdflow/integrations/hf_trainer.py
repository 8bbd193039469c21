"""``KDTrainer`` / ``KDTrainingArguments``: distillation as a drop-in for the Hugging Face ``Trainer``.

A Trainer user changes two names and adds a teacher::

    args = KDTrainingArguments("out", alpha=0.9, temperature=4.0, teacher_cache="cache", ...)
    trainer = KDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=..., ...)
    trainer.train()

Only ``compute_loss`` changes. The loss is kdflow's own :class:`~kdflow.distillation.distiller.Distiller`
(the ``LOGIT_LOSSES`` table, the layer terms), so a KDTrainer run and ``kdflow distill``
optimise the same function. The teacher is frozen and moved to the Trainer's device,
never prepared or wrapped (no DDP, no optimizer, not saved in checkpoints). Everything
else is the Trainer's: checkpoints and ``resume_from_checkpoint``, ``eval_strategy``,
``load_best_model_at_end``, ``compute_metrics``, gradient accumulation, bf16, ``report_to``,
torchrun.

``teacher_cache``: a folder where each distinct input's teacher logits are kept, computed
the first time the example is seen. Examples are keyed by their content (the unpadded token
ids the teacher reads), not by an id column, so the Trainer's own collator and
``remove_unused_columns`` need nothing extra, and shuffling, padding, DDP shards and
resumed runs all find the same entries. New entries go to disk in a few large files (at each checkpoint,
each epoch end, and every 8,192 rows), not one per batch. Without it the teacher runs on every batch (online).
Evaluation reports the student's own task loss (``eval_loss``); the teacher does not run on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..config import DistillConfig
from ..config.load import explain
from ..distillation.distiller import Distiller, FeatureStudent, freeze, use_eager_attention
from ..distillation.layers import resolve_for
from ..distillation.teacher_cache import TeacherCache
from ..errors import KdflowError
from ..models.io import fingerprint
from ..tasks import task_kind, task_of_hf


@dataclass
class KDTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus distillation. ``loss = alpha · KD(T) + (1 − alpha) · task loss``
    (``logit_loss``: a name in ``kdflow.distillation.distiller.LOGIT_LOSSES``; ``hinton`` is MSE to the teacher
    for a regression head). ``layers``: off (``None``), a map name (``last:3``, ``uniform``,
    ``skip``) or a list of ``{student, teacher, kind, weight}``; named maps give each pair the
    kinds and weights of ``layer_losses`` (``"hidden:1,attention:1"``)."""

    alpha: float = field(default=0.5, metadata={"help": "Weight of the soft-target loss (0 = no distillation)."})
    temperature: float = field(default=4.0, metadata={"help": "Softmax temperature of the soft targets."})
    logit_loss: str = field(default="hinton", metadata={"help": "hinton, dkd or mse (kdflow's LOGIT_LOSSES)."})
    layers: Optional[str] = field(default=None, metadata={
        "help": "Intermediate-layer map: last:K, uniform, skip, or a list of {student, teacher, kind, weight}."})
    layer_losses: str = field(default="hidden:1,attention:1", metadata={
        "help": "Kinds and weights of a named layer map, e.g. hidden:1,attention:1 (kinds: hidden, attention, "
                "pkd, cosine)."})
    teacher_cache: Optional[str] = field(default=None, metadata={
        "help": "Folder for the teacher's logits, computed once per distinct input (offline distillation)."})

    def __post_init__(self):
        super().__post_init__()
        self.distill_config()  # refuse bad values now, not at the first batch

    def distill_config(self) -> DistillConfig:
        """The same settings as kdflow's ``distill`` section (validated there)."""
        from pydantic import ValidationError
        raw = {"mode": "offline" if self.teacher_cache else "online", "alpha": self.alpha,
               "temperature": self.temperature, "logit_loss": self.logit_loss,
               "intermediate": self.layers is not None, "layer_losses": _weights(self.layer_losses)}
        if self.layers is not None:
            raw["layers"] = self.layers
        try:
            return DistillConfig(**raw)
        except ValidationError as err:
            raise KdflowError("KDTrainingArguments: " + explain(err, DistillConfig)) from None


def _weights(spec: "str | dict") -> dict:
    if isinstance(spec, dict):
        return spec
    out = {}
    for part in filter(None, (p.strip() for p in str(spec).split(","))):
        kind, _, weight = part.partition(":")
        try:
            out[kind.strip()] = float(weight)
        except ValueError:
            raise KdflowError(f"KDTrainingArguments.layer_losses entry {part!r} is not kind:weight; write e.g. "
                              "hidden:1,attention:1") from None
    return out


def content_key(inputs: dict, row: int) -> str:
    """An example's cache key: a hash of the inputs the teacher reads (token and segment ids, padding removed;
    labels left out)."""
    mask = inputs.get("attention_mask")
    keep = mask[row].bool() if mask is not None else slice(None)
    h = hashlib.sha1()
    for name in sorted(inputs):
        value = inputs[name]
        if name in ("attention_mask", "labels", "label") or not torch.is_tensor(value) or value.dim() < 1:
            continue
        x = value[row]
        x = x[keep] if mask is not None and x.shape[:1] == mask[row].shape else x
        h.update(name.encode())
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class KDTrainer(Trainer):
    """A ``Trainer`` whose training loss distils ``teacher_model`` into ``model`` (see the module)."""

    loss_is_scaled_for_ga = False  # our loss is a per-batch mean: the Trainer divides by the accumulation steps

    def __init__(self, model: Optional[nn.Module] = None, teacher_model: Optional[nn.Module] = None,
                 args: Optional[KDTrainingArguments] = None, **kwargs: Any):
        if args is not None and not isinstance(args, KDTrainingArguments):
            raise KdflowError("KDTrainer needs KDTrainingArguments (TrainingArguments plus alpha, temperature, "
                              "logit_loss, layers, teacher_cache); replace TrainingArguments(...) with "
                              "KDTrainingArguments(...)")
        args = args if args is not None else KDTrainingArguments("tmp_trainer")
        dc = args.distill_config()
        if teacher_model is None and dc.alpha > 0:
            raise KdflowError("KDTrainer needs teacher_model= (a fine-tuned classifier for the same labels), "
                              "or alpha=0 to train the student alone")
        super().__init__(model=model, args=args, **kwargs)
        student = self.model
        task = _task(student, "model")
        if teacher_model is not None:
            _same_head(student, teacher_model)
            _same_tokens(student, teacher_model)
            freeze(teacher_model).to(self.args.device)  # moved, never prepared: no wrapper, no optimizer
        self.teacher_model = teacher_model
        pairs = _pairs(dc, student, teacher_model) if dc.intermediate and dc.alpha > 0 else []
        # the teacher runs per batch, or (teacher_cache) per new input: "offline" reads batch rows of targets
        self.cache = TeacherCache(args.teacher_cache, fingerprint(teacher_model, "kdflow.integrations.hf_trainer"), CACHE_FLUSH_ROWS) \
            if args.teacher_cache and teacher_model is not None and dc.alpha > 0 and not pairs else None
        if self.cache is not None:
            self.add_callback(_CacheSync(self))
        mode = "offline" if self.cache is not None else "online"
        self.distiller = Distiller(teacher_model, dc.model_copy(update={"mode": mode}), task, pairs)
        self._terms: dict[str, list[torch.Tensor]] = {}

    # ------------------------------------------------------------------ the loss

    def compute_loss(self, model: nn.Module, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch=None):
        if not model.training:  # evaluation: the student's own task loss, no teacher
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        labels = inputs.get("labels")
        if labels is None:
            raise KdflowError("KDTrainer got a training batch without 'labels'; keep the label column in the "
                              "dataset (named label or labels) so the collator passes it")
        feats = {k: v for k, v in inputs.items() if k != "labels"}
        batch = {"inputs": feats, "teacher_inputs": feats, "labels": labels,
                 "index": torch.arange(labels.shape[0])}
        if self.cache is not None:
            self.distiller.targets = self._cached_logits(feats)  # row i = example i of this batch
        student = FeatureStudent(model, self.distiller.pairs, {}) if self.distiller.pairs else model
        terms = self.distiller(student, batch)
        for name, value in terms.items():  # kept as tensors: no device sync per step
            self._terms.setdefault(name, []).append(value.detach())
        loss = terms["loss"]
        return (loss, None) if return_outputs else loss

    def _cached_logits(self, feats: dict) -> torch.Tensor:
        first = next(iter(feats.values()))
        keys = [content_key(feats, i) for i in range(first.shape[0])]
        teacher = self.teacher_model

        def compute(rows: list[int]) -> torch.Tensor:
            pick = torch.tensor(rows, device=first.device)
            with torch.no_grad():
                out = teacher(**{k: v.index_select(0, pick) for k, v in feats.items()})
            return out.logits.float()

        return self.cache.get(keys, compute).to(self.args.device)

    def log(self, logs: dict, *args, **kwargs) -> None:
        """The Trainer's log, plus the mean of each loss term since the last log (loss_kd, loss_hard...)."""
        if "loss" in logs and self._terms:
            for name, values in self._terms.items():
                if name != "loss":
                    logs[name] = round(torch.stack(values).float().mean().item(), 4)
            self._terms = {}
        super().log(logs, *args, **kwargs)


CACHE_FLUSH_ROWS = 8192  # teacher rows per cache part file (and at every checkpoint and epoch end)


class _CacheSync(TrainerCallback):
    """The teacher cache's disk writes and reads: new rows written at each checkpoint and epoch end (every
    process, then a barrier), parts from other processes read at each epoch start. Within an epoch the DDP
    shards are disjoint, so no process waits for another's rows mid-epoch."""

    def __init__(self, trainer: "KDTrainer"):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.cache.reload()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.cache.flush()
        self.trainer.accelerator.wait_for_everyone()

    def on_save(self, args, state, control, **kwargs):
        self.trainer.cache.flush()

    on_train_end = on_save


def student_from(teacher: nn.Module, num_layers: Optional[int] = None, hidden_size: Optional[int] = None,
                 teacher_layers: Optional[list[int]] = None, dropout: float = 0.1) -> nn.Module:
    """kdflow's recipe for a Trainer user's student: the teacher's family with fewer blocks (default half,
    rounded up), its embeddings, evenly spread blocks and task head copied (a PCA projection of the
    embeddings, and no head copy, when narrower), the teacher's labels. The vocabulary is kept whole:
    KDTrainer feeds both models one batch."""
    from ..config import HFSpec
    from ..models.hf import build_hf_student
    task = _task(teacher, "teacher")
    config = teacher.config
    names = [config.id2label[i] for i in range(config.num_labels)] if task_kind(task).classes else None
    spec = HFSpec(num_layers=num_layers, hidden_size=hidden_size, teacher_layers=teacher_layers, dropout=dropout)
    return build_hf_student(spec, teacher, names, task)


# ------------------------------------------------------------------ checks

def _task(model: nn.Module, role: str) -> str:
    config = getattr(model, "config", None)
    if config is None:
        raise KdflowError(f"KDTrainer's {role} has no .config; give a Hugging Face sequence-classification model")
    if any(str(a).endswith("ForTokenClassification") for a in getattr(config, "architectures", None) or []) or \
            type(model).__name__.endswith("ForTokenClassification"):
        raise KdflowError(f"KDTrainer's {role} is a token classifier, and KDTrainer distils one output per example; "
                          "distil taggers with kdflow distill (data.task: tokens)")
    return task_of_hf(config.num_labels, config.problem_type)


def _same_head(student: nn.Module, teacher: nn.Module) -> None:
    s, t = student.config.num_labels, teacher.config.num_labels
    if s != t:
        raise KdflowError(f"The student predicts {s} labels and the teacher {t}; build the student with "
                          f"num_labels={t} (the teacher's label set)")


def _same_tokens(student: nn.Module, teacher: nn.Module) -> None:
    s, t = getattr(student.config, "vocab_size", None), getattr(teacher.config, "vocab_size", None)
    if s is not None and t is not None and s != t:
        raise KdflowError(f"KDTrainer feeds one batch to both models, but the student's vocabulary has {s} tokens "
                          f"and the teacher's {t}; give them the same tokenizer (a pruned-vocabulary student "
                          "needs kdflow distill, which tokenizes for each model)")


def _pairs(dc: DistillConfig, student: nn.Module, teacher: nn.Module) -> list:
    pairs = resolve_for(dc.layers, student, teacher, dict(dc.layer_losses))
    if not pairs:
        raise KdflowError("KDTrainingArguments.layers is set but layer_losses gives no kind a positive weight; "
                          "e.g. layer_losses='hidden:1,attention:1'")
    widths = (student.config.hidden_size, teacher.config.hidden_size)
    if widths[0] != widths[1] and any(p.kind != "attention" for p in pairs):
        raise KdflowError(f"KDTrainer compares hidden states of equal width, and the student is {widths[0]} wide, "
                          f"the teacher {widths[1]}; use layer_losses='attention:1', or kdflow distill "
                          "(it learns projections between widths)")
    if any(p.kind == "attention" for p in pairs):
        use_eager_attention(student)
        use_eager_attention(teacher)
    return pairs


__all__ = ["KDTrainer", "KDTrainingArguments", "content_key", "student_from"]
