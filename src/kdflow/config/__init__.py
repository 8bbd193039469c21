"""Typed configuration: pydantic models, loaded from YAML, overridden by ``--set``.

Every section is strict: an unknown key is an error that names the key and the
closest valid one, and a bad value is an error that names the key and the rule.
Types are exact (``true`` is no number, ``1.5`` and ``"3"`` are no whole numbers),
every number is finite, and a key given twice in a YAML file is an error
(:mod:`~kdflow.config.checks`, which also reads ``1e-3`` as a number, as YAML 1.2 does).
The same objects are built from Python without any YAML::

    cfg = Config(data=DataConfig(path="clinc.json"), run=RunConfig(name="x"))

* :mod:`~kdflow.config.base` — :class:`Strict`, what every section is
* :mod:`~kdflow.config.specs` — ``model.teacher`` / ``model.student``, discriminated on ``kind``
  (:data:`MODEL_SPECS`: ``hf``, ``encoder``, ``vision``, ``dkvb``; teachers only: ``llm``, ``predictions``)
* :mod:`~kdflow.config.sections` — ``distill``, ``train`` / ``teach``, ``run`` and :class:`Config` itself
* :mod:`~kdflow.config.data_section` — :class:`DataConfig` (sources, columns, GLUE presets, transfer set)
* :mod:`~kdflow.config.commands` — ``active`` and ``frontier``
* :mod:`~kdflow.config.load` — :func:`load_config`, ``--set`` overrides, one-sentence errors
* :mod:`~kdflow.config.glue` — the GLUE table (a task's kind, labels, metrics, file layouts)
"""

from .base import Strict
from .commands import ActiveConfig, FrontierConfig
from .data_section import DataConfig
from .load import apply_overrides, build, explain, load_config, same_setting
from .sections import Config, DistillConfig, ExtraTeacher, LayerEntry, RunConfig, TrainConfig, learning_rate
from .specs import (
                    MODEL_SPECS,
                    AnyModelSpec,
                    DKVBSpec,
                    EncoderSpec,
                    HFSpec,
                    LLMSpec,
                    ModelConfig,
                    ModelSpec,
                    PredictionsSpec,
                    TransformerSizes,
                    VisionSpec,
)

__all__ = ["load_config", "apply_overrides", "build", "explain", "same_setting", "MODEL_SPECS", "ActiveConfig",
           "AnyModelSpec", "Config", "DataConfig", "DistillConfig", "EncoderSpec", "ExtraTeacher", "FrontierConfig",
           "HFSpec", "LLMSpec", "PredictionsSpec", "LayerEntry", "ModelConfig", "ModelSpec", "RunConfig", "Strict",
           "TrainConfig", "TransformerSizes", "VisionSpec", "DKVBSpec", "learning_rate"]
