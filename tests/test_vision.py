"""Images: the featurizer (normalisation, augmentation shared by teacher and student), the vision model
kind (small-input variants, stages, save/load), CNN feature distillation (hooks on stages, FitNets and
attention transfer), the offline refusal, and ONNX export of a CNN student."""

import numpy as np
import pytest
import torch

from kdflow.config import VisionSpec, load_config
from kdflow.data import ImageFeaturizer, ImagePreprocess, Split, make_collate
from kdflow.errors import KdflowError
from kdflow.distillation.layers import resolve_for, stage_paths
from kdflow.models import KINDS, load_saved, save_model
from kdflow.models.vision import build_mobilenet_v2, build_resnet

from margins import SEED, at_most

LABELS = ["0", "1", "2"]


def images(n=12, side=12, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side, channels), dtype=np.uint8) for _ in range(n)]


def split(n=12, side=12, channels=1):
    return Split("train", [f"train:{i}" for i in range(n)], {"image": images(n, side, channels)},
                 np.arange(n) % 3)


def gray(mean=0.5, std=0.25):
    return ImagePreprocess([mean], [std], channels=1)


def test_featurizer_normalises_repeats_gray_and_resizes():
    s = split(4, side=8)
    x = ImageFeaturizer(gray(0.5, 0.25)).collate(ImageFeaturizer(gray()).encode(s))["pixel_values"]
    raw = torch.from_numpy(np.stack(s.inputs["image"])).permute(0, 3, 1, 2).float() / 255
    assert x.shape == (4, 1, 8, 8)
    torch.testing.assert_close(x, (raw - 0.5) / 0.25)
    rgb = ImageFeaturizer(ImagePreprocess([0.0] * 3, [1.0] * 3, channels=3, size=16))
    y = rgb.collate(rgb.encode(s))["pixel_values"]
    assert y.shape == (4, 3, 16, 16)
    torch.testing.assert_close(y[:, 0], y[:, 2])  # gray repeated into RGB
    with pytest.raises(KdflowError, match="3 channels and the model reads 1"):
        f = ImageFeaturizer(gray())
        f.collate(f.encode(split(2, channels=3)))


def test_augmentation_only_in_training_batches_and_shared_by_teacher_and_student():
    s = split(8, side=10)
    plain = ImageFeaturizer(ImagePreprocess([0.0], [1.0], 1))
    aug = ImageFeaturizer(ImagePreprocess([0.0], [1.0], 1), augment=("crop", "flip"), crop_padding=3)
    assert aug.augments and not plain.augments
    rows = aug.encode(s)
    clean = plain.collate(plain.encode(s))["pixel_values"]
    torch.testing.assert_close(aug.collate(rows, train=False)["pixel_values"], clean)  # evaluation: untouched
    a, b = aug.collate(rows, True, seed=1)["pixel_values"], aug.collate(rows, True, seed=1)["pixel_values"]
    torch.testing.assert_close(a, b)  # the seed fixes the draw
    assert a.shape == clean.shape and not torch.equal(a, clean)
    assert not torch.equal(a, aug.collate(rows, True, seed=2)["pixel_values"])
    # a teacher reading RGB at another size and a gray student see the same crop of each image
    teacher_feat = ImageFeaturizer(ImagePreprocess([0.0] * 3, [1.0] * 3, 3), augment=("crop", "flip"), crop_padding=3)
    torch.manual_seed(0)
    batch = make_collate(s, aug, teacher_feat, train=True)(list(range(8)))
    torch.testing.assert_close(batch["teacher_inputs"]["pixel_values"][:, :1], batch["inputs"]["pixel_values"])
    assert not torch.equal(batch["inputs"]["pixel_values"], clean)


def test_config_refuses_cached_targets_for_augmented_images_and_defaults_to_online():
    base = {"data": {"packaged": "digits", "augment": ["crop"]}}
    assert load_config(base).distill.mode == "online"
    for mode in ("offline", "guide"):
        with pytest.raises(KdflowError, match="changes the images every epoch"):
            load_config({**base, "distill": {"mode": mode}})
    assert load_config({"data": {"packaged": "digits"}}).distill.mode == "offline"
    with pytest.raises(KdflowError, match="one channel count per stage"):
        load_config({"data": {"packaged": "digits"},
                     "model": {"student": {"kind": "vision", "depths": [1, 1], "hidden_sizes": [8]}}})


def test_small_input_resnet_keeps_resolution_and_its_stages_are_the_blocks():
    spec = VisionSpec(hidden_sizes=[8, 16, 32], depths=[1, 1, 1])
    small = build_resnet(spec, 1, LABELS, "classification")
    large = build_resnet(spec.model_copy(update={"small_input": False}), 1, LABELS, "classification")
    x = torch.randn(2, 1, 28, 28)
    s_states = small(pixel_values=x, output_hidden_states=True).hidden_states
    l_states = large(pixel_values=x, output_hidden_states=True).hidden_states
    assert s_states[1].shape[-1] == 28 and l_states[1].shape[-1] == 7  # stem stride 1, no max-pool
    assert stage_paths(small) == [f"resnet.encoder.stages.{i}" for i in range(3)]
    mobile = build_mobilenet_v2(VisionSpec(width=0.25), 1, LABELS, "classification")
    paths = stage_paths(mobile)
    # one stage per bottleneck group of the paper (at width 0.25 the first two groups both have 8 channels, and
    # stay two stages), then the 1x1 expansion
    assert paths == ["mobilenet_v2.layer.1", "mobilenet_v2.layer.4", "mobilenet_v2.layer.8", "mobilenet_v2.layer.11",
                     "mobilenet_v2.layer.14", "mobilenet_v2.layer.15", "mobilenet_v2.conv_1x1"]
    assert all(m.momentum == 0.1 for m in mobile.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert mobile(pixel_values=x).logits.shape == (2, 3)


def test_vision_model_saves_and_reloads_with_its_preprocessing(tmp_path):
    torch.manual_seed(0)
    model = build_resnet(VisionSpec(hidden_sizes=[8, 16], depths=[1, 1]), 1, LABELS, "classification")
    x = torch.randn(3, 1, 12, 12)
    model.train()
    model(pixel_values=x)  # running statistics move: the reload must carry them
    model.eval()
    save_model(model, tmp_path / "m", gray(0.13, 0.3), LABELS)
    assert [k for k, kind in KINDS.items() if kind.saved_in(tmp_path / "m")] == ["vision"]
    back, prep, labels, task = load_saved(tmp_path / "m")
    assert prep == gray(0.13, 0.3) and labels == LABELS and task == "classification"
    assert back.resnet.embedder.embedder.convolution.stride == (1, 1)  # small-input stem re-applied
    back.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(pixel_values=x).logits, model(pixel_values=x).logits)


def _pair_losses(kinds):
    from kdflow.config import DistillConfig
    from kdflow.distillation.distiller import Distiller, FeatureStudent, feature_widths
    torch.manual_seed(SEED)
    teacher = build_resnet(VisionSpec(hidden_sizes=[8, 16, 32], depths=[1, 1, 1]), 1, LABELS, "classification")
    student = build_mobilenet_v2(VisionSpec(width=0.25), 1, LABELS, "classification")
    pairs = resolve_for("last:3", student, teacher, kinds)
    x = torch.randn(8, 1, 16, 16)
    batch = {"index": torch.arange(8), "inputs": {"pixel_values": x}, "teacher_inputs": {"pixel_values": x},
             "labels": torch.arange(8) % 3}
    model = FeatureStudent(student, pairs, feature_widths(student, teacher, pairs, batch))
    distiller = Distiller(teacher, DistillConfig(mode="online", alpha=0.5), "classification", pairs)
    return model, distiller, batch, pairs


@pytest.mark.parametrize("kind", ["hidden", "at"])
def test_cnn_stage_losses_hook_the_last_three_stages_and_train(kind):
    model, distiller, batch, pairs = _pair_losses({kind: 1.0})
    assert [(p.student, p.teacher) for p in pairs] == [(4, 0), (5, 1), (6, 2)]  # the teacher has 3 stages
    if kind == "hidden":  # FitNets: a learned 1x1 projection (a per-position linear map) to the teacher's width
        assert sorted(model.projections) == ["hidden_s4_t0", "hidden_s5_t1", "hidden_s6_t2"]
        assert (model.projections["hidden_s6_t2"].in_features, model.projections["hidden_s6_t2"].out_features) == \
            (1280, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    names = [f"loss_{p.name}" for p in pairs]
    stage_sums = []
    for _ in range(25):
        terms = distiller(model, batch)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        stage_sums.append(sum(terms[n].item() for n in names))
    # the stage terms fall: the student learns the maps (BENCHMARKS.md, "Test margins")
    at_most(f"vision: {kind} stage terms, mean of the last 3 of 25 steps / first",
            np.mean(stage_sums[-3:]) / stage_sums[0], 0.7)
    assert not any(m._forward_hooks for m in distiller.teacher.modules())  # hooks removed


def test_attention_kl_on_cnn_stages_is_refused_with_the_fix(tmp_path):
    from kdflow.distillation.critical import layer_map

    class Run:
        class cfg:
            class distill:
                layers, layer_losses = "last:2", {"hidden": 1.0, "attention": 1.0}
        info = staticmethod(lambda m: None)
    teacher = build_resnet(VisionSpec(hidden_sizes=[8, 16], depths=[1, 1]), 1, LABELS, "classification")
    student = build_mobilenet_v2(VisionSpec(width=0.25), 1, LABELS, "classification")
    with pytest.raises(KdflowError, match="attention transfer"):
        layer_map(Run, teacher, student, None)


def test_onnx_export_of_a_cnn_student_agrees_with_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from kdflow.deploy.export import export_onnx, ort_runner, ort_session
    torch.manual_seed(0)
    model = build_mobilenet_v2(VisionSpec(width=0.25), 1, LABELS, "classification").eval()
    x = torch.randn(2, 1, 28, 28)
    path = export_onnx(model, {"pixel_values": x}, tmp_path / "m.onnx")
    run = ort_runner(ort_session(path))
    other = torch.randn(5, 1, 28, 28)  # another batch size: the batch axis is dynamic
    with torch.no_grad():
        expected = model(pixel_values=other).logits.numpy()
    np.testing.assert_allclose(run({"pixel_values": other}), expected, atol=1e-4, rtol=1e-4)


def test_fitnets_hint_pools_non_square_maps_and_at_masks_padding_tokens():
    from kdflow.distillation.distiller import layer_term
    from kdflow.distillation.layers import LayerPair, common_grid
    from kdflow.distillation.losses import attention_transfer
    s, t = torch.randn(2, 8, 6, 10), torch.randn(2, 8, 4, 5)
    ps, pt = common_grid(s, t)
    assert ps.shape == (2, 8, 4, 5) and pt is t
    torch.testing.assert_close(ps[:, :, 0, 0], s[:, :, :2, :2].mean((2, 3)))  # 6x10 -> 4x5: windows of 1.5 x 2
    assert layer_term(LayerPair(0, 0, "hidden"), s, t, None) > 0  # a 6x10 map against a 4x5 one
    # tokens: padded positions do not enter the attention map, whatever the padding holds
    a, b = torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    noisy = a.clone()
    noisy[0, 3:] = 100.0
    torch.testing.assert_close(attention_transfer(noisy, b, mask), attention_transfer(a, b, mask))
    with pytest.raises(KdflowError, match="CNN map with a Transformer block"):
        layer_term(LayerPair(0, 0, "at"), torch.randn(2, 4, 3, 3), torch.randn(2, 9, 4), None)
    # widths may differ for attention transfer on tokens (it averages over them); token counts may not
    assert layer_term(LayerPair(0, 0, "at"), a, b, mask) >= 0
    with pytest.raises(KdflowError, match="cover 5 and 7 tokens"):
        layer_term(LayerPair(0, 0, "at"), a, torch.randn(2, 7, 6), mask)
