"""kdflow: knowledge distillation with active learning, from a laptop CPU to many GPUs."""

from . import active  # the package, callable as kdflow.active(cfg)
from .api import check, distill, evaluate, teach
from .config import (
                     ActiveConfig,
                     Config,
                     DataConfig,
                     DistillConfig,
                     EncoderSpec,
                     HFSpec,
                     ModelConfig,
                     ModelSpec,
                     RunConfig,
                     TrainConfig,
                     load_config,
)
from .deploy.compare import MeasureOptions
from .errors import KdflowError

__version__ = "0.1.0"
__all__ = ["teach", "distill", "evaluate", "check", "active", "MeasureOptions", "ActiveConfig", "Config", "DataConfig",
           "DistillConfig", "EncoderSpec", "HFSpec", "ModelConfig", "ModelSpec", "RunConfig", "TrainConfig",
           "load_config", "KdflowError", "__version__"]
