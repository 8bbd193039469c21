"""The contract every model kind keeps (``kdflow.models.KINDS``): a new kind is exercised here by its
table entry alone — its tiny spec builds a student from a teacher, the student learns, saves and
reloads to the same outputs, and only its own kind claims its saved folder."""

import pytest
import torch

from kdflow.config import MODEL_SPECS, DataConfig, load_config
from kdflow.models import KINDS, BuildContext, load_saved, save_model

from margins import SEED, at_most

# "it learns": the loss after 15 steps over the first, in the half nearer 1 (no progress) of the span between 1 and
# the highest ratio measured over ten seeds and two kernel sets, rounded up to 0.05 (BENCHMARKS.md, "Test margins":
# highest 0.81, 0.13, 0.41, 0.84)
LEARNS = {"hf": 0.95, "encoder": 0.6, "vision": 0.75, "dkvb": 0.95}

LABELS = ["a", "b", "c"]


def test_every_kind_has_a_config_spec_and_the_union_accepts_its_tiny_spec():
    assert set(KINDS) == set(MODEL_SPECS)
    for name, kind in KINDS.items():
        cfg = load_config({"data": {"path": "x.json"}, "model": {"student": kind.tiny}})
        assert type(cfg.model.student) is MODEL_SPECS[name] and cfg.model.student.kind == name


@pytest.fixture(scope="module")
def teacher(tiny_bert):
    from kdflow.models import load_hf_classifier, load_tokenizer
    return load_hf_classifier(tiny_bert, LABELS, "classification"), load_tokenizer(tiny_bert)


def image_world():
    """A teacher of the vision kind and a batch of 8 gray 12x12 images, with their preprocessing."""
    from kdflow.data import ImagePreprocess
    prep = ImagePreprocess([0.5], [0.25], channels=1)
    spec = MODEL_SPECS["vision"].model_validate({"kind": "vision", "hidden_sizes": [8, 16], "depths": [1, 1]})
    model = KINDS["vision"].teacher(spec, BuildContext(LABELS, "classification", 16, prep))
    return model, prep, {"pixel_values": torch.randn(8, 1, 12, 12)}


STUDENTS = [name for name, kind in KINDS.items() if not kind.fixed]


@pytest.mark.parametrize("name", [name for name, kind in KINDS.items() if kind.fixed])
def test_a_teacher_used_as_it_is_refuses_to_be_a_student_or_trained(name):
    from kdflow.errors import KdflowError
    kind, spec = KINDS[name], MODEL_SPECS[name].model_validate(KINDS[name].tiny)
    with pytest.raises(KdflowError, match=f"kind {name} is a teacher; give model.student kind hf"):
        kind.check(spec, "student", DataConfig(path="x.json"))
    assert not kind.matches_layers and kind.has_head(spec, LABELS, "classification")


@pytest.mark.parametrize("name", STUDENTS)
def test_kind_builds_a_student_that_learns_saves_and_reloads(name, teacher, tmp_path):
    kind, spec = KINDS[name], MODEL_SPECS[name].model_validate(KINDS[name].tiny)
    torch.manual_seed(SEED)
    if spec.modality == "image":
        model, tok, enc = image_world()
    else:
        model, tok = teacher
        enc = None
    kind.check(spec, "student", DataConfig(path="x.json"))  # every kind accepts data of what it reads
    ctx = BuildContext(LABELS, "classification", 16, tok, model, rank_teacher_blocks=lambda: [1, 0])
    student, s_tok = kind.student(spec, ctx)
    assert s_tok is not None
    if enc is None:
        enc = s_tok(["book a flight", "play some music", "what is the weather", "check my balance"] * 2,
                    padding=True, return_tensors="pt")
    if kind.prepare is not None:  # what it fits without labels (dkvb: its keys)
        kind.prepare(student, [dict(enc)], 0, lambda message: None)
    y = torch.tensor([0, 1, 2, 0] * 2)
    assert student(**enc).logits.shape == (8, 3)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(student(**enc).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    at_most(f"model kinds: {name} loss after 15 steps / first loss", losses[-1] / losses[0], LEARNS[name])
    save_model(student, tmp_path / name, s_tok, LABELS)
    assert [k for k, other in KINDS.items() if other.saved_in(tmp_path / name)] == [name]
    back, tok2, labels, task = load_saved(tmp_path / name)
    assert labels == LABELS and task == "classification" and tok2 is not None
    student.eval()
    back.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(**enc).logits, student(**enc).logits)
