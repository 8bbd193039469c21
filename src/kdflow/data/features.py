"""Featurizers: the inputs of some examples -> model keyword arguments.

One protocol for every modality. ``encode(split)`` is deterministic (tokenizing a
text, parsing a sequence, later decoding an image): its rows are cached by example
id, so each example is encoded once whatever subset asks for it. ``collate(rows,
train)`` builds the batch tensors; anything random (image augmentation) belongs
there, applied only when ``train`` is true, so a cached row is never a frozen
augmentation. ``augments`` marks a featurizer that does that: teacher outputs cached
once would not match what its student sees, so offline targets must be refused for it
(images with ``data.augment``; :class:`kdflow.config.Config` refuses that pairing).

A new modality is one class here (its ``field``: the input it reads) plus an entry in
:data:`FEATURIZERS`; the data's modality follows (:func:`modality_of`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np
import torch

from ..errors import KdflowError
from ..files import read_json
from .splits import Split


class Featurizer(Protocol):
    augments: bool
    max_length: int

    def encode(self, split: Split) -> list[dict]:
        """Encoded rows of ``split`` in order (deterministic; cached by example id)."""

    def collate(self, rows: list[dict], train: bool = False) -> dict[str, torch.Tensor]:
        """A batch of model keyword arguments from encoded rows. A featurizer that ``augments`` also takes
        ``seed``: one draw per batch, so a teacher's and a student's featurizer augment alike."""


class CachedFeaturizer:
    """The id cache every featurizer shares: ``_encode`` runs once per example id."""

    augments = False
    field = ""  # the input field this featurizer reads

    def __init__(self, max_length: int = 128):
        self.max_length = max_length
        self._rows: dict[str, dict] = {}  # example id -> encoded row; ids are content-derived

    def encode(self, split: Split) -> list[dict]:
        missing = [i for i, key in enumerate(split.ids) if key not in self._rows]
        if missing:
            if self.field not in split.inputs:
                raise KdflowError(f"Split '{split.name}' has inputs {list(split.inputs)}; this model reads "
                                  f"{self.field}")
            for i, row in zip(missing, self._encode(split, missing)):
                self._rows[split.ids[i]] = row
        return [self._rows[key] for key in split.ids]

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        raise NotImplementedError


class TextFeaturizer(CachedFeaturizer):
    """Text (and text pairs): tokenized once per example (no padding), padded per batch."""

    field = "text"

    def __init__(self, tokenizer, max_length: int = 128):
        super().__init__(max_length)
        if isinstance(tokenizer, ImagePreprocess):
            raise KdflowError("This data holds text but the model reads images (it has an image preprocessing, no "
                              "tokenizer); give a text model, or image data")
        self.tokenizer = tokenizer

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        if self.tokenizer is None:
            raise KdflowError("This model reads text but has no tokenizer (a saved model folder keeps it in "
                              "tokenizer_config.json and the files beside it); save the model with its tokenizer, "
                              "use an hf model, or give an encoder a tokenizer through model.teacher.name")
        texts = [split.inputs["text"][i] for i in positions]
        pair = [split.inputs["text_pair"][i] for i in positions] if "text_pair" in split.inputs else None
        enc = self.tokenizer(texts, pair, truncation=True, max_length=self.max_length)
        names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in enc]
        return [{n: enc[n][j] for n in names} for j in range(len(positions))]

    def collate(self, rows: list[dict], train: bool = False) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id or 0
        length = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for name in rows[0]:
            fill = pad if name == "input_ids" else 0
            t = torch.full((len(rows), length), fill, dtype=torch.long)
            for i, r in enumerate(rows):
                t[i, : len(r[name])] = torch.tensor(r[name], dtype=torch.long)
            batch[name] = t
        return batch


class WordsFeaturizer(TextFeaturizer):
    """Sentences as words (token tagging): each word tokenized into sub-tokens; ``word_ids`` ``[B, L]`` says
    which word each sub-token belongs to (-1: a special token, padding, or with ``subwords: first`` a word's
    later sub-tokens) and ``word_mask`` ``[B, W]`` (``W`` = ``max_length``) which of the output positions are
    words. A sentence longer than ``max_length`` sub-tokens is refused: its last words would go untagged."""

    field = "words"

    def __init__(self, tokenizer, max_length: int = 128, subwords: str = "first"):
        super().__init__(tokenizer, max_length)
        self.subwords = subwords

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        if self.tokenizer is None or not getattr(self.tokenizer, "is_fast", False):
            raise KdflowError("Token tagging aligns words to sub-tokens through a fast (Rust) tokenizer, and this "
                              "model has none; give a model whose tokenizer.json is saved with it")
        sentences = [[str(w) for w in split.inputs["words"][i]] for i in positions]
        enc = self.tokenizer(sentences, is_split_into_words=True, truncation=False)
        names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in enc]
        rows = []
        for j, i in enumerate(positions):
            ids = enc.word_ids(j)
            if len(ids) > self.max_length:
                raise KdflowError(f"Sentence {split.ids[i]} of the {split.name} split is {len(ids)} sub-tokens long, "
                                  f"more than data.max_length {self.max_length}; raise data.max_length or split the "
                                  "sentence")
            missing = set(range(len(sentences[j]))) - {w for w in ids if w is not None}
            if missing:
                word = sentences[j][min(missing)]
                raise KdflowError(f"Word {word!r} of sentence {split.ids[i]} ({split.name} split) becomes no "
                                  "sub-token in this tokenizer (a space or control character?); drop it from the "
                                  "sentence")
            words, last = [], None
            for w in ids:
                first = w is not None and w != last
                words.append(w if w is not None and (first or self.subwords == "all") else -1)
                last = w
            rows.append({**{n: enc[n][j] for n in names}, "word_ids": words})
        return rows

    def collate(self, rows: list[dict], train: bool = False) -> dict[str, torch.Tensor]:
        text = super().collate([{k: v for k, v in r.items() if k != "word_ids"} for r in rows], train)
        length = text["input_ids"].shape[1]
        word_ids = torch.full((len(rows), length), -1, dtype=torch.long)
        word_mask = torch.zeros((len(rows), self.max_length), dtype=torch.long)
        for i, r in enumerate(rows):
            word_ids[i, : len(r["word_ids"])] = torch.tensor(r["word_ids"], dtype=torch.long)
            word_mask[i, : max(r["word_ids"]) + 1] = 1
        return {**text, "word_ids": word_ids, "word_mask": word_mask}


class RawText:
    """The "tokenizer" of a model that reads the examples' text itself (an LLM teacher builds prompts; a
    predictions file looks rows up by text or id): :func:`make_featurizer` then gives a
    :class:`RawTextFeaturizer`."""

    def __repr__(self) -> str:
        return "RawText()"


def as_bytes(texts: Sequence[str]) -> torch.Tensor:
    """Strings -> ``[B, L]`` UTF-8 bytes, padded with -1 (a tensor, so it travels through batches like token ids)."""
    raw = [t.encode("utf-8") for t in texts]
    out = torch.full((len(raw), max([len(r) for r in raw] + [1])), -1, dtype=torch.long)
    for i, r in enumerate(raw):
        out[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


def from_bytes(t: torch.Tensor) -> list[str]:
    """The inverse of :func:`as_bytes`."""
    return [bytes(int(b) for b in row if b >= 0).decode("utf-8") for row in t.cpu()]


class RawTextFeaturizer(CachedFeaturizer):
    """Each example's id, text (and text pair) unchanged, as byte tensors (:func:`as_bytes`): ``ids``,
    ``text`` and ``text_pair`` in the batch; the model decodes them (:func:`from_bytes`)."""

    field = "text"

    def __init__(self, tokenizer=None, max_length: int = 128):
        super().__init__(max_length)

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        pair = split.inputs.get("text_pair")
        return [{"ids": split.ids[i], "text": str(split.inputs["text"][i]),
                 **({"text_pair": str(pair[i])} if pair is not None else {})} for i in positions]

    def collate(self, rows: list[dict], train: bool = False) -> dict[str, torch.Tensor]:
        return {name: as_bytes([r[name] for r in rows]) for name in rows[0]}


class ValuesFeaturizer(CachedFeaturizer):
    """Numeric sequences (``inputs["values"]``, each ``[L]`` or ``[L, D]``): padded into
    ``[B, L, D]`` float tensors with an attention mask. Reads no tokens (``tokenizer`` is ignored)."""

    field = "values"

    def __init__(self, tokenizer=None, max_length: int = 128):
        super().__init__(max_length)

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        return [{"values": np.asarray(split.inputs["values"][i], dtype=np.float32)} for i in positions]

    def collate(self, rows: list[dict], train: bool = False) -> dict[str, torch.Tensor]:
        length = min(self.max_length, max(len(r["values"]) for r in rows))
        first = rows[0]["values"]
        dim = first.shape[1] if first.ndim == 2 else 1
        if any((r["values"].shape[1] if r["values"].ndim == 2 else 1) != dim for r in rows):
            raise KdflowError(f"Numeric sequences mix vector sizes (first is {dim}); every step of every "
                              "example must have the same number of values")
        out = torch.zeros(len(rows), length, dim)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            v = torch.from_numpy(r["values"][:length]).reshape(-1, dim)
            out[i, : len(v)] = v
            mask[i, : len(v)] = 1
        return {"values": out, "attention_mask": mask}


IMAGE_FILE = "kdflow_image.json"


@dataclass
class ImagePreprocess:
    """How an image model reads pixels (its "tokenizer"; saved beside its weights as ``kdflow_image.json``):
    ``x = (pixels / 255 - mean) / std`` per channel, gray repeated to ``channels`` when the model reads
    RGB, resized (bilinear) to ``size`` x ``size`` when set. Built-here models take ``mean``/``std`` from
    the training images (:func:`image_preprocess`); a pretrained model brings its image processor's."""

    mean: list[float]
    std: list[float]
    channels: int
    size: Optional[int] = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` floats in [0, 1] -> the model's ``pixel_values``."""
        if x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise KdflowError(f"The images have {x.shape[1]} channels and the model reads {self.channels}; "
                                  "give images of the model's kind (gray or RGB)")
            x = x.expand(-1, self.channels, -1, -1)
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def save_pretrained(self, folder: "str | Path") -> None:
        (Path(folder) / IMAGE_FILE).write_text(json.dumps(asdict(self), indent=2))

    def well_formed(self) -> bool:
        """Whether the fields hold what :meth:`__call__` needs (a read-back file may hold anything)."""
        def numbers(v) -> bool:
            return isinstance(v, list) and len(v) == self.channels and all(
                type(x) in (int, float) and np.isfinite(x) for x in v)
        return type(self.channels) is int and self.channels in (1, 3) and numbers(self.mean) \
            and numbers(self.std) and min(self.std) > 0 and (self.size is None or type(self.size) is int
                                                             and self.size > 0)

    @classmethod
    def from_folder(cls, folder: "str | Path") -> Optional["ImagePreprocess"]:
        path = Path(folder) / IMAGE_FILE
        if not path.is_file():
            return None
        fix = "save the model again (kdflow writes it with the model)"
        meta = read_json(path, f"'{path}'", fix, dict)
        try:
            out = cls(**meta)
        except TypeError:
            raise KdflowError(f"'{path}' holds keys {sorted(meta)}, not mean, std, channels and size; {fix}") from None
        if not out.well_formed():
            raise KdflowError(f"'{path}' is damaged (mean and std must be lists of channels (1 or 3) finite numbers, "
                              f"std above 0, size a positive whole number or null); {fix}")
        return out


def image_preprocess(split: Split) -> ImagePreprocess:
    """Per-channel mean and std of ``split``'s images (the training split's, for models built here), and
    their side when square."""
    images = split.inputs["image"]
    mean, std = image_stats(images)
    h, w, c = images[0].shape
    # the training size is kept: images of another size (evaluated later, other data) are resized to it
    return ImagePreprocess([float(m) for m in mean], [float(s) for s in std], int(c), int(h) if h == w else None)


def image_stats(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the pixels scaled to [0, 1] (float64 sums; std at
    least 1e-6), for input normalisation."""
    if not images:
        raise KdflowError("Cannot compute image statistics of no images; give a non-empty training split")
    channels = images[0].shape[2]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for image in images:
        if image.shape[2] != channels:
            raise KdflowError(f"Images with {image.shape[2]} and {channels} channels are mixed; give one kind "
                              "(gray or RGB) per data set")
        x = image.reshape(-1, channels).astype(np.float64) / 255.0
        total += x.sum(axis=0)
        squares += np.square(x).sum(axis=0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return mean.tolist(), np.maximum(std, 1e-6).tolist()


def augment_batch(x: torch.Tensor, kinds: Sequence[str], padding: int, generator: torch.Generator) -> torch.Tensor:
    """Train-time augmentation of ``[B, C, H, W]``: ``crop`` (zero-pad by ``padding``, then a random crop of
    the original size per image) and ``flip`` (horizontal, each image with probability 1/2)."""
    b, _, h, w = x.shape
    if "crop" in kinds:
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if "flip" in kinds:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x


class ImageFeaturizer(CachedFeaturizer):
    """Images (``inputs["image"]``, uint8 ``[H, W, C]``) -> ``pixel_values`` ``[B, C, H, W]`` through the
    model's :class:`ImagePreprocess`; training batches augmented when ``augment`` names any."""

    field = "image"

    def __init__(self, tokenizer: Optional[ImagePreprocess] = None, max_length: int = 128,
                 augment: Sequence[str] = (), crop_padding: int = 4):
        super().__init__(max_length)
        if tokenizer is not None and not isinstance(tokenizer, ImagePreprocess):
            raise KdflowError(f"This data holds images but the model reads through a {type(tokenizer).__name__}; "
                              "set model.teacher.kind and model.student.kind to vision")
        self.preprocess, self.augment, self.crop_padding = tokenizer, tuple(augment), crop_padding
        self.augments = bool(self.augment)

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        return [{"image": np.ascontiguousarray(np.asarray(split.inputs["image"][i], dtype=np.uint8)
                                               .transpose(2, 0, 1))} for i in positions]

    def collate(self, rows: list[dict], train: bool = False, seed: Optional[int] = None) -> dict[str, torch.Tensor]:
        if self.preprocess is None:
            raise KdflowError("This image model has no preprocessing (kdflow_image.json); load it through kdflow "
                              "or give the run's data so its statistics can be computed")
        x = torch.from_numpy(np.stack([r["image"] for r in rows])).float() / 255.0
        if train and self.augment:
            gen = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(2 ** 62, (1,))))
            x = augment_batch(x, self.augment, self.crop_padding, gen)
        return {"pixel_values": self.preprocess(x)}


# modality -> featurizer class, constructed as cls(tokenizer, max_length); the first whose field the data has wins
FEATURIZERS: dict[str, type[CachedFeaturizer]] = {"values": ValuesFeaturizer, "image": ImageFeaturizer,
                                                  "words": WordsFeaturizer, "text": TextFeaturizer}


def modality_of(inputs: dict) -> str:
    """The modality of examples with these input fields (``text`` when none matches: its featurizer says so)."""
    return next((m for m, cls in FEATURIZERS.items() if cls.field in inputs), "text")


def make_featurizer(modality: str, tokenizer=None, max_length: int = 128, augment: Sequence[str] = (),
                    crop_padding: int = 4, subwords: str = "first") -> Featurizer:
    """The featurizer of a modality (``TaskData.modality``); ``tokenizer``: the model's (an
    :class:`ImagePreprocess` for images); ``augment`` (training batches; images only); ``subwords``: which
    sub-tokens of a word make its output (token tagging)."""
    if isinstance(tokenizer, RawText):
        if modality != "text":
            raise KdflowError(f"This model reads text, and this data holds {modality}; give it text data")
        return RawTextFeaturizer(tokenizer, max_length)
    if modality == "image":
        return ImageFeaturizer(tokenizer, max_length, augment, crop_padding)
    if modality == "words":
        return WordsFeaturizer(tokenizer, max_length, subwords)
    if augment:
        raise KdflowError(f"data.augment ({', '.join(augment)}) transforms images, and this data holds {modality}; "
                          "drop data.augment")
    return FEATURIZERS[modality](tokenizer, max_length)


__all__ = ["image_stats", "Featurizer", "CachedFeaturizer", "TextFeaturizer", "WordsFeaturizer", "ValuesFeaturizer",
           "ImageFeaturizer", "ImagePreprocess", "RawText", "RawTextFeaturizer", "as_bytes", "from_bytes",
           "IMAGE_FILE", "image_preprocess", "augment_batch", "FEATURIZERS", "modality_of", "make_featurizer"]
