"""Data: source -> labels -> splits -> transfer set (:func:`load_data`), then featurizers and batches.

* :mod:`~kdflow.data.splits` — :class:`Split`, :class:`TaskData`, content-derived example ids, stratified sampling
* :mod:`~kdflow.data.tables`, :mod:`~kdflow.data.hub` — local files (CSV/TSV/JSON/JSONL/Parquet, CLINC150) and the HF hub
* :mod:`~kdflow.data.load` — :func:`load_data`: one label map, the validation hold-out, the transfer set
* :mod:`~kdflow.data.features` — one :class:`Featurizer` protocol: text (and pairs), numeric sequences, images
* :mod:`~kdflow.data.images` — image sources: packaged sets, image folders, .npz, pixel tables, the hub
* :mod:`~kdflow.data.batches` — the seeded sampler, collate, loaders
"""

from .batches import input_batches, loader, make_collate, set_epoch, train_loader
from .features import (FEATURIZERS, Featurizer, ImageFeaturizer, ImagePreprocess, TextFeaturizer, ValuesFeaturizer,
                       image_preprocess, make_featurizer, modality_of)
from .load import load_data, source_of
from .splits import IGNORE, Split, TaskData, content_keys, example_ids, stratified_sample, stratified_split

__all__ = ["load_data", "source_of", "Split", "TaskData", "IGNORE", "content_keys", "example_ids", "stratified_sample",
           "stratified_split", "Featurizer", "TextFeaturizer", "ValuesFeaturizer", "ImageFeaturizer",
           "ImagePreprocess", "image_preprocess", "FEATURIZERS", "make_featurizer", "modality_of",
           "loader", "make_collate", "train_loader", "input_batches", "set_epoch"]
