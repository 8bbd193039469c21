"""``kdflow.hf``: the public name of the Hugging Face Trainer drop-in, which lives in
:mod:`kdflow.integrations.hf_trainer` (``from kdflow.hf import KDTrainer, KDTrainingArguments``)."""

from .integrations.hf_trainer import KDTrainer, KDTrainingArguments, content_key, student_from

__all__ = ["KDTrainer", "KDTrainingArguments", "content_key", "student_from"]
