"""Analytic properties of the distillation losses, not just 'it runs'."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdflow.distillation.losses import ce_loss, hinton_loss, kd_loss, mse_loss


def logits(seed, b=6, c=5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * scale


def test_kd_is_zero_for_identical_logits_and_positive_otherwise():
    s = logits(0)
    for T in (0.5, 1.0, 4.0):
        assert kd_loss(s, s.clone(), T).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits(1), logits(2), 2.0).item() > 1e-3
    # invariant to a per-example shift of the logits (softmax is)
    assert kd_loss(s + 3.0, s, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_matches_temperature_squared_times_kl():
    s, t = logits(3), logits(4)
    for T in (1.0, 2.0, 8.0):
        p_t = F.softmax(t / T, -1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / T, -1))).sum(-1).mean()
        assert kd_loss(s, t, T).item() == pytest.approx(T * T * kl.item(), rel=1e-5)


def test_kd_high_temperature_limit_is_logit_matching():
    # Hinton et al. 2015, sec. 2.1: for large T and zero-mean logits,
    # T^2 * KL -> (1 / 2C) * sum_c (s_c - t_c)^2 (per example).
    s, t = logits(5, c=4, scale=0.5).double(), logits(6, c=4, scale=0.5).double()
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    expected = ((s - t) ** 2).sum(-1).mean().item() / (2 * 4)
    assert kd_loss(s, t, 1000.0).item() == pytest.approx(expected, rel=1e-3)


def test_kd_gradient_is_T_times_prob_difference():
    # d/ds [T^2 KL(p_t || softmax(s/T))] = T * (softmax(s/T) - softmax(t/T)) / B
    s, t, T = logits(7).requires_grad_(True), logits(8), 3.0
    kd_loss(s, t, T).backward()
    expected = T * (F.softmax(s.detach() / T, -1) - F.softmax(t / T, -1)) / s.shape[0]
    torch.testing.assert_close(s.grad, expected, rtol=1e-4, atol=1e-6)
    # a descent step moves the student towards the teacher
    with torch.no_grad():
        stepped = s - 0.5 * s.grad
    assert kd_loss(stepped, t, T) < kd_loss(s.detach(), t, T)


def test_mask_drops_examples_and_empty_mask_gives_zero():
    s, t = logits(9), logits(10)
    mask = torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)
    assert kd_loss(s, t, 2.0, mask).item() == pytest.approx(kd_loss(s[mask], t[mask], 2.0).item(), rel=1e-6)
    s2 = s.clone()
    s2[~mask] = 100.0  # masked rows cannot change the value
    assert kd_loss(s2, t, 2.0, mask).item() == pytest.approx(kd_loss(s, t, 2.0, mask).item(), rel=1e-6)
    none = torch.zeros(6, dtype=torch.bool)
    g = s.clone().requires_grad_(True)
    out = kd_loss(g, t, 2.0, none)
    out.backward()
    assert out.item() == 0.0 and torch.count_nonzero(g.grad) == 0


def test_ce_skips_ignored_labels():
    s = logits(11)
    y = torch.tensor([0, 1, -100, 3, -100, 2])
    keep = y != -100
    assert ce_loss(s, y).item() == pytest.approx(F.cross_entropy(s[keep], y[keep]).item(), rel=1e-6)
    assert ce_loss(s, torch.full((6,), -100)).item() == 0.0


def test_hinton_mixes_with_alpha():
    s, t, y = logits(12), logits(13), torch.tensor([0, 1, 2, 3, 4, 0])
    kd, ce = kd_loss(s, t, 4.0).item(), F.cross_entropy(s, y).item()
    for a in (0.0, 0.3, 1.0):
        out = hinton_loss(s, t, y, 4.0, a)
        assert out["loss"].item() == pytest.approx(a * kd + (1 - a) * ce, rel=1e-6)
        assert out["loss_kd"].item() == pytest.approx(kd, rel=1e-6)
    plain = hinton_loss(s, None, y, 4.0, 0.7)
    assert set(plain) == {"loss", "loss_hard"} and plain["loss"].item() == pytest.approx(ce, rel=1e-6)
    with pytest.raises(ValueError):
        hinton_loss(s, t, y, 4.0, 1.5)
    with pytest.raises(ValueError):
        kd_loss(s, t, 0.0)


def test_regression_uses_mse_to_teacher_and_target():
    pred = torch.tensor([[1.0], [2.0], [3.0]])
    teacher = torch.tensor([[1.5], [2.0], [2.0]])
    target = torch.tensor([1.0, 4.0, 3.0])
    out = hinton_loss(pred, teacher, target, 4.0, 0.25, task="regression")
    kd = (0.25 + 0 + 1) / 3
    hard = (0 + 4 + 0) / 3
    assert out["loss_kd"].item() == pytest.approx(kd)
    assert out["loss_hard"].item() == pytest.approx(hard)
    assert out["loss"].item() == pytest.approx(0.25 * kd + 0.75 * hard)
    # a missing (NaN) target is skipped, in the value and in the gradient
    p = pred.clone().requires_grad_(True)
    out = mse_loss(p, torch.tensor([1.0, math.nan, 4.0]))
    out.backward()
    assert out.item() == pytest.approx(0.5)  # only rows 0 and 2: (0 + 1) / 2
    assert torch.isfinite(p.grad).all() and p.grad.reshape(-1).tolist() == [0.0, 0.0, -1.0]


# ------------------------------------------------------------ the logit-loss table (kdflow.distillation.distiller.LOGIT_LOSSES)

def test_the_config_checks_the_names_the_table_holds():
    """distill.logit_loss is checked against names in the config (a leaf: no torch, no distiller); they are the
    table's, in its order."""
    from kdflow.config.sections import LOGIT_LOSS_NAMES
    from kdflow.distillation.distiller import LOGIT_LOSSES
    assert tuple(LOGIT_LOSSES) == LOGIT_LOSS_NAMES


ENTRIES = [(name, task) for name, entry in __import__("kdflow.distillation.distiller", fromlist=["LOGIT_LOSSES"])
           .LOGIT_LOSSES.items() for task in entry.tasks]


def targets_for(task: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if task == "regression":
        return torch.randn(6, generator=g)
    if task == "multilabel":
        return (torch.rand(6, 5, generator=g) > 0.6).float()
    return torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize("name,task", ENTRIES)
def test_every_logit_loss_entry_keeps_the_contract(name, task):
    """Every entry of the table, for every task it serves, through the Distiller: zero soft loss when the student
    already says what the teacher says, positive otherwise, a gradient for the student, and alpha mixing with
    the hard loss."""
    from kdflow.config import DistillConfig, load_config
    from kdflow.distillation.distiller import LOGIT_LOSSES, Distiller, resolve_logit_loss
    entry = LOGIT_LOSSES[name]
    teachers = 2 if entry.many else 1
    regression = task == "regression"
    assert resolve_logit_loss(name, task, teachers) == name  # the name means itself
    assert load_config({"data": {"path": "x"}, "distill": {"logit_loss": name}}).distill.logit_loss == name
    extra = [{"name": f"t{i}"} for i in range(teachers - 1)]  # names are not loaded here: targets set by hand
    dc = DistillConfig(logit_loss=name, alpha=0.7, temperature=2.0, extra_teachers=extra)
    d = Distiller(None, dc, task)
    s = logits(0, c=1) if regression else logits(0)
    batch = {"index": torch.arange(6), "labels": targets_for(task, 0)}
    d.extra_targets = [s.clone() for _ in range(teachers - 1)]
    same = d.logit_terms(s, s.clone(), batch)
    assert same["loss_kd"].item() == pytest.approx(0.0, abs=1e-5)
    other = logits(1, c=1) if regression else logits(1)
    d.extra_targets = [other.clone() for _ in range(teachers - 1)]
    student = s.clone().requires_grad_(True)
    terms = d.logit_terms(student, other, batch)
    assert terms["loss_kd"].item() > 1e-3
    assert terms["loss"].item() == pytest.approx(0.7 * terms["loss_kd"].item() + 0.3 * terms["loss_hard"].item(),
                                                 rel=1e-5)
    terms["loss"].backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_logit_loss_names_resolve_by_task_and_teachers_or_say_what_is_wrong():
    from kdflow.config import load_config
    from kdflow.distillation.distiller import resolve_logit_loss
    from kdflow.errors import KdflowError
    assert resolve_logit_loss("hinton", "classification", 1) == "hinton"
    assert resolve_logit_loss("hinton", "classification", 3) == "multi_teacher"
    assert resolve_logit_loss("hinton", "regression", 1) == "mse"
    with pytest.raises(KdflowError, match="dkd is for classification and tokens, and this data is regression"):
        resolve_logit_loss("dkd", "regression", 1)
    with pytest.raises(KdflowError, match="dkd distils one teacher's targets; drop distill.extra_teachers"):
        resolve_logit_loss("dkd", "classification", 2)
    with pytest.raises(KdflowError, match="extra_teachers averages softmax targets over classes, and regression "
                                          "distils one teacher"):
        resolve_logit_loss("hinton", "regression", 2)
    assert resolve_logit_loss("hinton", "multilabel", 1) == "binary_kd"
    assert resolve_logit_loss("mse", "multilabel", 1) == "mse"
    with pytest.raises(KdflowError, match="binary_kd is for multilabel, and this data is classification"):
        resolve_logit_loss("binary_kd", "classification", 1)
    with pytest.raises(KdflowError, match=r"distill.logit_loss.*choose one of hinton, dkd.*did you mean dkd"):
        load_config({"data": {"path": "x"}, "distill": {"logit_loss": "dkdd"}})
