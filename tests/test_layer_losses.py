"""Intermediate and extra logit losses: analytic cases, masks, projections."""

import pytest
import torch
import torch.nn.functional as F

from kdflow.distillation.losses import (attention_kl, cosine_hidden_loss, dkd_loss, hidden_mse, kd_loss, multi_teacher_kd, pkd_loss)


def _logits(seed, b=5, c=4):
    return torch.randn(b, c, generator=torch.Generator().manual_seed(seed)) * 2


def test_dkd_decomposes_hinton_kd_exactly():
    s, t, y = _logits(0), _logits(1), torch.tensor([0, 1, 2, 3, 1])
    T = 2.0
    d = dkd_loss(s, t, y, T, alpha=1.0, beta=1.0)
    # Zhao et al. eq. (2), per example: KD = TCKD + (1 - p_t[gold]) * NCKD  (all at temperature T)
    p_gold = F.softmax(t / T, -1).gather(1, y[:, None]).squeeze(1)
    per_kd = torch.stack([kd_loss(s[i:i + 1], t[i:i + 1], T) for i in range(5)])
    per = [dkd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], T) for i in range(5)]
    recomposed = torch.stack([p["tckd"] + (1 - p_gold[i]) * p["nckd"] for i, p in enumerate(per)])
    assert torch.allclose(per_kd, recomposed, atol=1e-5)
    assert d["loss"] == pytest.approx(float(d["tckd"] + d["nckd"]), rel=1e-6)
    assert dkd_loss(s, s, y, T)["loss"].abs() < 1e-6
    # beta weighs only the non-target term; -100 rows are skipped
    d8 = dkd_loss(s, t, y, T, alpha=0.0, beta=8.0)
    assert d8["loss"] == pytest.approx(8 * float(d["nckd"]), rel=1e-5)
    skipped = dkd_loss(s, t, torch.tensor([0, 1, 2, 3, -100]), T)
    assert skipped["loss"] == pytest.approx(float(dkd_loss(s[:4], t[:4], y[:4], T)["loss"]), rel=1e-5)


def test_multi_teacher_kd_matches_single_and_mixture():
    s, t1, t2 = _logits(0), _logits(1), _logits(2)
    assert multi_teacher_kd(s, [t1], None, 3.0) == pytest.approx(float(kd_loss(s, t1, 3.0)), rel=1e-5)
    assert multi_teacher_kd(s, [t1, t1], [0.3, 0.7], 3.0) == pytest.approx(float(kd_loss(s, t1, 3.0)), rel=1e-5)
    assert multi_teacher_kd(s, [t1, t2], [1.0, 0.0], 3.0) == pytest.approx(float(kd_loss(s, t1, 3.0)), rel=1e-5)
    # a student that outputs the mixture exactly has zero loss
    mix = 0.25 * F.softmax(t1 / 2, -1) + 0.75 * F.softmax(t2 / 2, -1)
    assert multi_teacher_kd(2 * mix.log(), [t1, t2], [1, 3], 2.0).abs() < 1e-5
    with pytest.raises(ValueError, match="one non-negative number per teacher"):
        multi_teacher_kd(s, [t1, t2], [1.0], 2.0)


def test_hidden_mse_value_mask_and_projection():
    s = torch.zeros(2, 3, 4)
    t = torch.ones(2, 3, 4)
    t[1, 2] = 100.0  # a padded token: must not count
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert hidden_mse(s, t, mask) == pytest.approx(1.0)
    assert hidden_mse(t, t, mask) == 0
    proj = torch.nn.Linear(4, 6)
    out = hidden_mse(torch.randn(2, 3, 4), torch.randn(2, 3, 6), mask, proj)
    out.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="give a projection"):
        hidden_mse(torch.randn(2, 3, 4), torch.randn(2, 3, 6))


def test_cosine_and_pkd_are_scale_free():
    h = torch.randn(2, 3, 8)
    assert cosine_hidden_loss(5 * h, h).abs() < 1e-6
    assert cosine_hidden_loss(-h, h) == pytest.approx(2.0, abs=1e-5)
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert cosine_hidden_loss(a[:, None], b[:, None]) == pytest.approx(1.0)
    cls = torch.randn(4, 8)
    assert pkd_loss(7 * cls, cls).abs() < 1e-6
    assert pkd_loss(-cls, cls) == pytest.approx(4.0, abs=1e-5)
    assert pkd_loss(a, b) == pytest.approx(2.0)


def test_attention_kl_masks_padding_and_averages_heads():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    big = torch.finfo(torch.float32).max

    def maps(heads):
        scores = torch.randn(2, heads, 4, 4, generator=g).masked_fill(mask[:, None, None, :] == 0, -big)
        return scores.softmax(-1)
    s, t = maps(2), maps(2)
    assert attention_kl(t, t, mask).abs() < 1e-6
    value = attention_kl(s, t, mask)
    assert value > 0
    # what the padded query row holds does not matter
    s2 = s.clone()
    s2[0, :, 3] = torch.tensor([0.97, 0.01, 0.01, 0.01])
    assert attention_kl(s2, t, mask) == pytest.approx(float(value), rel=1e-6)
    # different head counts: compared after averaging heads; equal averages give zero
    t4 = torch.cat([t, t], 1)
    assert attention_kl(t, t4, mask).abs() < 1e-6
    # by hand for one real query: KL(t || s) summed over keys
    one = torch.tensor([[[[0.5, 0.5]]]]), torch.tensor([[[[0.25, 0.75]]]])
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.25)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))
    assert attention_kl(one[1], one[0]) == pytest.approx(float(expected), rel=1e-6)


def test_taps_read_cnn_feature_maps_for_hidden_matching():
    from torch import nn

    from kdflow.errors import KdflowError
    from kdflow.distillation.layers import Taps, as_tokens, match_length
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1))
    student = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    with Taps(teacher, ["2"]) as tt, Taps(student, ["1"]) as ts:
        teacher(x), student(x)
    t, s = as_tokens(tt.outputs["2"]), as_tokens(ts.outputs["1"])
    assert t.shape == (2, 64, 32) and s.shape == (2, 16, 8)
    s = match_length(s, t)  # the 4x4 student grid resampled to the teacher's 8x8 (adaptive average pooling)
    assert s.shape == (2, 64, 8)
    proj = nn.Linear(8, 32)
    loss = hidden_mse(s, t.detach(), projection=proj)
    loss.backward()
    assert student[0].weight.grad.abs().sum() > 0  # the student learns through the tap
    assert not teacher[2]._forward_hooks  # hooks removed on exit
    with pytest.raises(KdflowError, match="no module 'conv9'"):
        Taps(teacher, ["conv9"])
