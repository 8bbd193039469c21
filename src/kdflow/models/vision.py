"""``kind: vision``: image classifiers of ``transformers`` (ResNet, MobileNetV2, and through the Auto
classes any image classifier: ViT, ConvNeXt, EfficientNet ...).

A named model is loaded with ``AutoModelForImageClassification`` (its head sized for the task)
and reads pixels through its image processor's normalisation and size. An unnamed one is built
from a config, random init: a ResNet (teacher default) or a MobileNetV2 (student default), with
``small_input`` variants for 8-64 px images. Its *stages* (module paths, kept in
``config.kdflow_stages``) are what ``distill.layers`` and ``kdflow layers`` call blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..config import DataConfig, VisionSpec
from ..data.features import ImagePreprocess
from ..errors import KdflowError, first_line
from .base import BuildContext, ModelKind
from .hf import has_task_head, label_kwargs, resolve_name, saved_architectures
from .io import quiet_transformers, read_model_json

IMAGE_HEAD = "ForImageClassification"
MOBILENET_V2_STAGE_ENDS = (1, 4, 8, 11, 14, 15)  # last layer of each width group of transformers' 16 layers


def is_image_classifier(folder: "str | Path") -> bool:
    return any(IMAGE_HEAD in a for a in saved_architectures(folder))  # DeiT's ...ForImageClassificationWithTeacher


# ------------------------------------------------------------ building

def build_resnet(spec: VisionSpec, channels: int, label_names, task: str) -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification
    hidden = spec.hidden_sizes or [64, 128, 256, 512]
    depths = spec.depths or [2] * len(hidden)
    if len(depths) != len(hidden):
        raise KdflowError(f"model.*.depths has {len(depths)} stages and hidden_sizes {len(hidden)}; give both "
                          "with one entry per stage")
    cfg = ResNetConfig(num_channels=channels, embedding_size=hidden[0], hidden_sizes=hidden, depths=depths,
                       layer_type=spec.layer_type, **label_kwargs(label_names, task))
    cfg.kdflow_small_input = spec.small_input
    return adapt(ResNetForImageClassification(cfg))


def build_mobilenet_v2(spec: VisionSpec, channels: int, label_names, task: str) -> nn.Module:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification
    cfg = MobileNetV2Config(num_channels=channels, depth_multiplier=spec.width or 1.0,
                            output_stride=8 if spec.small_input else 32, classifier_dropout_prob=spec.dropout,
                            image_size=32 if spec.small_input else 224, **label_kwargs(label_names, task))
    return adapt(MobileNetV2ForImageClassification(cfg))


def adapt(model: nn.Module) -> nn.Module:
    """What kdflow changes in a transformers image model, re-applied on every load: the small-input ResNet
    stem (stride 1, no max-pool; the weights keep their shapes), PyTorch's batch-norm momentum for
    MobileNetV2 (transformers ports TensorFlow's 0.997 *decay* as PyTorch's *momentum*, so its running
    statistics would be the last batch's), and the stage paths."""
    cfg = model.config
    if getattr(cfg, "kdflow_small_input", False) and cfg.model_type == "resnet":
        stem = model.resnet.embedder
        stem.embedder.convolution.stride = (1, 1)
        stem.pooler = nn.Identity()
    if cfg.model_type == "mobilenet_v2":
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    cfg.kdflow_stages = stage_paths(model)
    return model


def stage_paths(model: nn.Module) -> list[str]:
    """Module paths of the model's stages, in order: ResNet/ConvNeXt ``stages.i``; MobileNetV2 the last
    inverted-residual layer of each width, then its 1x1 expansion; otherwise the longest module list's items."""
    if getattr(model.config, "model_type", "") == "mobilenet_v2":
        n = len(model.mobilenet_v2.layer)
        # the paper's bottleneck groups (24, 32, 64, 96, 160, 320 channels at width 1), by position: narrow
        # widths round several groups to the same channel count, so the counts cannot tell them apart
        ends = MOBILENET_V2_STAGE_ENDS if n == 16 else range(n)
        return [f"mobilenet_v2.layer.{i}" for i in ends] + ["mobilenet_v2.conv_1x1"]
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise KdflowError(f"Cannot find the stages of {type(model).__name__}; give distill.layers as module paths")
    staged = [(name, m) for name, m in lists if name.split(".")[-1] == "stages"]
    name, found = (staged or sorted(lists, key=lambda nm: -len(nm[1])))[0]
    return [f"{name}.{i}" for i in range(len(found))]


def load_image_classifier(name: str, label_names, task: str, trust_remote_code: bool = False) -> nn.Module:
    from transformers import AutoModelForImageClassification
    quiet_transformers()
    try:
        model = AutoModelForImageClassification.from_pretrained(
            resolve_name(name), trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True,
            dtype=torch.float32, **label_kwargs(label_names, task))
    except Exception as err:
        raise KdflowError(f"Could not load image classifier '{name}' ({first_line(err)}); give a local folder with "
                          "config.json and weights, or a hub id such as microsoft/resnet-50 (needs network)") from None
    return adapt(model)


def processor_preprocess(name: str) -> Optional[ImagePreprocess]:
    """The normalisation a named model expects: kdflow's own file, else its image processor's (mean, std, size)."""
    path = resolve_name(name)
    own = ImagePreprocess.from_folder(path) if Path(path).is_dir() else None
    if own is not None:
        return own
    from transformers import AutoConfig, AutoImageProcessor
    try:
        proc = AutoImageProcessor.from_pretrained(path)
        channels = getattr(AutoConfig.from_pretrained(path), "num_channels", 3)
    except Exception as err:
        raise KdflowError(f"Could not load the image processor of '{name}' ({first_line(err)}); give a folder with "
                          "preprocessor_config.json or kdflow_image.json, or a hub id (needs network)") from None
    size = getattr(proc, "crop_size", None) or getattr(proc, "size", None) or {}
    side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
    mean = list(getattr(proc, "image_mean", None) or [0.5] * channels)
    std = list(getattr(proc, "image_std", None) or [0.5] * channels)
    return ImagePreprocess(mean, std, channels, int(side) if side else None)


# ------------------------------------------------------------ the kind's entry points

def check(spec: VisionSpec, role: str, data: DataConfig) -> None:
    if data.values_column:
        raise KdflowError(f"data.values_column holds numeric sequences, which a vision {role} cannot read; set "
                          f"model.{role}.kind: encoder with input_dim")


def tokenizer(spec: VisionSpec) -> Optional[ImagePreprocess]:
    """A named model's own preprocessing; None for a model built here (the pipeline uses the data's)."""
    return processor_preprocess(spec.name) if spec.name else None


def has_head(spec: VisionSpec, label_names: Optional[list], task: str) -> bool:
    return bool(spec.name) and has_task_head(resolve_name(spec.name), label_names, task,
                                             is_head=lambda arch: IMAGE_HEAD in arch)


def _build(spec: VisionSpec, ctx: BuildContext, default_arch: str) -> nn.Module:
    if spec.name:
        return load_image_classifier(spec.name, ctx.label_names, ctx.task, spec.trust_remote_code)
    if not isinstance(ctx.tokenizer, ImagePreprocess):
        raise KdflowError("A vision model reads images; point data at an image source (data.packaged, an image "
                          "folder, .npz, a pixel table with data.image_shape, or a hub image set)")
    arch = spec.arch or default_arch
    build = build_resnet if arch == "resnet" else build_mobilenet_v2
    return build(spec, ctx.tokenizer.channels, ctx.label_names, ctx.task)


def teacher(spec: VisionSpec, ctx: BuildContext) -> nn.Module:
    return _build(spec, ctx, "resnet")


def student(spec: VisionSpec, ctx: BuildContext) -> tuple:
    model = _build(spec, ctx, "mobilenet_v2")
    ctx.log(f"[student] {describe(model, spec)}")
    return model, (processor_preprocess(spec.name) if spec.name else ctx.tokenizer)


def describe(model: nn.Module, spec: VisionSpec) -> str:
    c = model.config
    if spec.name:
        return f"{spec.name} ({c.model_type}, pretrained)"
    if c.model_type == "resnet":
        shape = f"ResNet {c.layer_type}, depths {c.depths}, channels {c.hidden_sizes}"
    else:
        shape = f"MobileNetV2 width {c.depth_multiplier:g}"
    return f"{shape}, {len(c.kdflow_stages)} stages, random init" + (", small-input stem" if spec.small_input else "")


def load(folder: Path) -> nn.Module:
    from transformers import AutoModelForImageClassification
    quiet_transformers()
    read_model_json(folder, "config.json")  # a damaged one is named as such, not as transformers words it
    try:
        return adapt(AutoModelForImageClassification.from_pretrained(folder, dtype=torch.float32))
    except Exception as err:
        raise KdflowError(f"'{folder}' does not hold an image-classification model ({first_line(err)}); give a "
                          "folder written by kdflow or by save_pretrained of an image classifier") from None


KIND = ModelKind(check=check, tokenizer=tokenizer, has_head=has_head, teacher=teacher, student=student,
                 saved_in=is_image_classifier, load=load, pretrained=lambda spec, model: bool(spec.name),
                 tiny={"kind": "vision", "arch": "mobilenet_v2", "width": 0.25})
