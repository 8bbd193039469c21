"""The sections of the commands beyond teach and distill: ``active`` and ``frontier``."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from .base import Strict


class ActiveConfig(Strict):
    """Pool-based active learning (``kdflow active``): rounds of train -> evaluate -> score the
    pool -> select -> label.

    The pool is ``data.train`` with its labels hidden until queried (a simulation; the
    first ``initial`` examples are drawn by ``initial_strategy``; with ``cold_start_labels``, every batch is
    until the labelled set holds that many), or, when
    ``data.unlabelled`` is given, those texts, with ``data.train`` as the labelled seed set.
    Batch ``b >= 1`` holds ``per_round * growth**(b-1)`` examples. The student trains on
    the labelled set with the teacher's soft targets (``distill.alpha``, offline, cached)
    and the labels of the ``oracle``. Stops at ``budget`` labels, after ``rounds`` rounds,
    at teacher parity on validation (``stop_parity``: within that fraction of the teacher's
    metric), or when predictions stabilise (Cohen's kappa between consecutive rounds'
    validation predictions >= ``stop_kappa`` for ``stop_window`` rounds).
    """

    # student: human (or gold) labels feed the student; teacher: they fine-tune the teacher, which then distils
    # the student on the whole pool; teacher_calls: the teacher is fixed, its calls are the budget and it labels
    # what the student picks (oracle teacher; nothing asks it about the rest of the pool)
    target: Literal["student", "teacher", "teacher_calls"] = "student"
    # a built-in strategy (kdflow.active.strategies.STRATEGIES) or one registered with
    # kdflow.active.register_strategy, by a module named in strategy_modules (checked when the run starts)
    strategy: str = Field("entropy", min_length=1)
    strategy_modules: list[str] = []  # Python modules (dotted names) or .py files imported first
    oracle: Literal["gold", "teacher", "human", "hybrid"] = "gold"
    hybrid_threshold: float = Field(0.9, gt=0.0, le=1.0)  # hybrid: the teacher labels when its max prob >= this
    hybrid_human: Literal["human", "gold"] = "human"  # hybrid: who labels the rest (gold = simulation)
    initial: int = Field(100, ge=1)
    # typicality / balanced: the teacher's view of the pool, no gold labels (kdflow.active.coldstart); unset: what
    # works with the other keys (kdflow.active.settings.resolve: stratified where gold labels exist, else a cold start)
    initial_strategy: Optional[Literal["random", "stratified", "typicality", "balanced"]] = None
    cold_start_labels: Optional[int] = Field(None, ge=1)  # batches by initial_strategy until this many labels
    per_round: int = Field(100, ge=1)
    growth: float = Field(1.0, ge=1.0)
    budget: Optional[int] = Field(None, ge=1)
    rounds: Optional[int] = Field(10, ge=1)
    retrain: Literal["scratch", "warm"] = "scratch"
    min_steps: int = Field(100, ge=0)  # small labelled sets get epochs enough for this many steps, and early stopping waits for them
    diversity: int = Field(1, ge=1)  # batch-mode diversity: k-centre among the diversity*k best scores (1 = off)
    mc_samples: int = Field(10, ge=2)  # MC-dropout passes for bald
    committee: Literal["checkpoints", "teacher_student"] = "checkpoints"
    committee_size: int = Field(3, ge=2)  # checkpoints: the student after each of its last N epochs
    stop_parity: Optional[float] = Field(None, gt=0.0, lt=1.0)
    stop_kappa: Optional[float] = Field(None, gt=0.0, le=1.0)
    stop_window: int = Field(2, ge=1)
    evaluate_test: bool = True  # score test after each round for the curve; never used to select or stop
    pool_batch_size: int = Field(256, ge=1)
    pool_chunk: int = Field(2048, ge=1)  # examples tokenized and scored at a time (memory bound)
    seed: int = Field(0, ge=0, lt=2**32)  # seed set and selection; the student's own seed is train.seed

    @model_validator(mode="after")
    def _teacher_calls_oracle(self) -> "ActiveConfig":
        """target teacher_calls: the teacher is the oracle (set unless another one was asked for)."""
        if self.target == "teacher_calls" and self.oracle != "teacher":
            if self.oracle != "gold":  # gold is the default (a run's config.yaml lists it): replaced, not refused
                raise ValueError(f"target teacher_calls spends teacher calls, so the teacher is the oracle; drop "
                                 f"active.oracle {self.oracle} or set it to teacher (gold is replaced)")
            object.__setattr__(self, "oracle", "teacher")
        return self


class FrontierConfig(Strict):
    """``kdflow frontier``: a family of students (every ``depths`` × ``widths``, built from the teacher
    with the recipe's auto settings), trained on the teacher's cached targets with ``train``'s settings.

    ``widths``: student widths, ``null`` = the teacher's; heads keep the teacher's head width and the
    feed-forward size its ratio. Successive halving: after each of ``rungs`` (epochs) the
    candidates are sorted into Pareto fronts (validation metric up, parameters down) and only
    the first ``1/eta`` survive, though never one of the first front (the first rung must come after
    the learning-rate warmup, ``train.warmup_ratio × train.epochs``); with a retention target,
    a candidate larger than one already meeting it stops too. ``forms``: the deployed forms measured.
    """

    depths: list[int] = Field(default_factory=lambda: [1, 2, 3, 4], min_length=1)
    widths: list[Optional[int]] = Field(default_factory=lambda: [None, 192], min_length=1)
    rungs: list[int] = Field(default_factory=lambda: [2, 4])
    eta: float = Field(2.0, gt=1.0)
    forms: list[Literal["pytorch", "int8", "onnx", "onnx-int8"]] = Field(
        default_factory=lambda: ["pytorch", "int8", "onnx-int8"], min_length=1)

    @field_validator("depths", "rungs")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v) or len(set(v)) != len(v):
            raise ValueError("list distinct whole numbers of at least 1")
        return sorted(v)

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: list[Optional[int]]) -> list[Optional[int]]:
        if any(x is not None and x < 8 for x in v) or len(set(v)) != len(v):
            raise ValueError("list distinct widths of at least 8 (null = the teacher's width)")
        return v


__all__ = ["ActiveConfig", "FrontierConfig"]
