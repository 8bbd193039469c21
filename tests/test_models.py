"""Students: smaller HF model of the teacher's family, initialised from teacher layers; own encoder."""

import pytest
import torch
from transformers import AutoTokenizer

from kdflow import EncoderSpec, HFSpec, KdflowError
from kdflow.models import (build_encoder_student, build_hf_student,
                           count_parameters, default_teacher_layers, fingerprint, has_task_head,
                           load_hf_classifier, load_saved, save_model)

from margins import SEED, at_least

LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def teacher(tiny_bert):
    return load_hf_classifier(tiny_bert, LABELS, "classification")


def test_default_teacher_layers_end_at_the_last():
    assert default_teacher_layers(6, 2) == [2, 5]
    assert default_teacher_layers(6, 3) == [1, 3, 5]
    assert default_teacher_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert default_teacher_layers(4, 4) == [0, 1, 2, 3]


def test_smaller_student_of_the_teachers_family(teacher):
    s = build_hf_student(HFSpec(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32), teacher,
                         LABELS, "classification")
    assert type(s) is type(teacher)
    assert (s.config.num_hidden_layers, s.config.hidden_size, s.config.num_labels) == (1, 16, 3)
    assert s.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert count_parameters(s) < count_parameters(teacher) / 1.5
    out = s(input_ids=torch.tensor([[101, 2000, 102]]))
    assert out.logits.shape == (1, 3)


def test_init_from_teacher_copies_chosen_layers_and_embeddings(teacher):
    s = build_hf_student(HFSpec(num_layers=1, init_from_teacher=True, teacher_layers=[1]), teacher,
                         LABELS, "classification")
    torch.testing.assert_close(s.bert.encoder.layer[0].attention.self.query.weight,
                               teacher.bert.encoder.layer[1].attention.self.query.weight)
    torch.testing.assert_close(s.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(s.classifier.weight, teacher.classifier.weight)  # same labels: the head too
    torch.testing.assert_close(s.bert.pooler.dense.weight, teacher.bert.pooler.dense.weight)
    default = build_hf_student(HFSpec(num_layers=1, init_from_teacher=True), teacher, LABELS, "classification")
    torch.testing.assert_close(default.bert.encoder.layer[0].output.dense.weight,
                               teacher.bert.encoder.layer[1].output.dense.weight)  # last layer by default
    with pytest.raises(KdflowError, match="must equal the teacher's"):
        build_hf_student(HFSpec(num_layers=1, hidden_size=16, num_heads=2, init_from_teacher=True,
                                   teacher_layers=[1]), teacher, LABELS, "classification")
    with pytest.raises(KdflowError, match="must equal the teacher's"):  # wider cannot be projected down
        build_hf_student(HFSpec(num_layers=1, hidden_size=64, num_heads=2, init_from_teacher=True), teacher,
                         LABELS, "classification")


def test_narrower_student_gets_pca_projected_teacher_embeddings(teacher):
    s = build_hf_student(HFSpec(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32,
                                   init_from_teacher=True), teacher, LABELS, "classification")
    e_t = teacher.bert.embeddings.word_embeddings.weight.detach()
    e_s = s.bert.embeddings.word_embeddings.weight.detach()
    assert e_s.shape == (e_t.shape[0], 16)
    # E_s = E_t P with P the top-16 principal directions: orthonormal, so E_s P^T is the best
    # rank-16 reconstruction of E_t around its mean, and no other 16-d projection keeps more variance
    from kdflow.models import project_embeddings
    p = project_embeddings(s, teacher)
    torch.testing.assert_close(p.T @ p, torch.eye(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(e_s, e_t @ p, atol=1e-5, rtol=0)
    centred = e_t - e_t.mean(0)
    kept = (centred @ p).pow(2).sum()
    random_q, _ = torch.linalg.qr(torch.randn(e_t.shape[1], 16, generator=torch.Generator().manual_seed(0)))
    assert kept > (centred @ random_q).pow(2).sum()
    pos_t, pos_s = teacher.bert.embeddings.position_embeddings.weight, s.bert.embeddings.position_embeddings.weight
    torch.testing.assert_close(pos_s.detach(), pos_t.detach() @ p, atol=1e-5, rtol=0)
    with pytest.raises(KdflowError, match="do not exist"):
        build_hf_student(HFSpec(num_layers=1, init_from_teacher=True, teacher_layers=[7]), teacher, LABELS,
                         "classification")


def test_encoder_reads_tokens_and_ignores_padding(tiny_bert):
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    torch.manual_seed(0)
    m = build_encoder_student(EncoderSpec(num_layers=2, hidden_size=32, num_heads=4), 3, tok, 16).eval()
    ids = torch.tensor([[101, 2000, 2003, 102]])
    padded = torch.tensor([[101, 2000, 2003, 102, 0, 0]])
    a = m(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    b = m(input_ids=padded, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]])).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # padding changes nothing
    out = m(input_ids=ids, output_hidden_states=True)
    assert out.logits.shape == (1, 3) and len(out.hidden_states) == 3
    with pytest.raises(KdflowError, match="exceeds the encoder's max_length"):
        m(input_ids=torch.ones(1, 40, dtype=torch.long))


def test_encoder_reads_numeric_sequences_and_learns():
    torch.manual_seed(SEED)
    m = build_encoder_student(EncoderSpec(num_layers=1, hidden_size=16, num_heads=2, input_dim=1,
                                        dropout=0.0), 2, None, 32)
    # class = whether the series trends up or down
    x = torch.cumsum(torch.randn(128, 20, 1) * 0.1, 1)
    y = torch.randint(0, 2, (128,))
    x = x + (y * 2 - 1).view(-1, 1, 1) * torch.linspace(0, 1, 20).view(1, -1, 1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(m(values=x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (m(values=x).logits.argmax(-1) == y).float().mean().item()
    at_least("models: encoder train accuracy after 60 steps", acc, 0.7)  # chance 0.5


def test_save_and_load_round_trip(tmp_path, teacher, tiny_bert):
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    enc = build_encoder_student(EncoderSpec(num_layers=1, hidden_size=16, num_heads=2), 3, tok, 16)
    save_model(enc, tmp_path / "enc", tok, LABELS)
    back, tok2, labels, task = load_saved(tmp_path / "enc")
    assert labels == LABELS and task == "classification" and tok2 is not None
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), back.state_dict().values()))
    save_model(teacher, tmp_path / "hf", tok, LABELS)
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert has_task_head(str(tmp_path / "hf"), LABELS, "classification")
    assert not has_task_head(str(tmp_path / "hf"), ["a", "b"], "classification")
    assert not has_task_head(tiny_bert, LABELS, "classification")  # its head was never trained for these labels
    hf_back = load_saved(tmp_path / "hf")[0]
    assert fingerprint(hf_back) == fingerprint(teacher)
    assert fingerprint(teacher, "max_length=32") != fingerprint(teacher, "max_length=64")
    with pytest.raises(KdflowError, match="does not exist"):
        load_saved(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdflowError, match="is an empty folder"):
        load_saved(tmp_path / "empty")
    (tmp_path / "empty" / "notes.txt").write_text("not a model")
    with pytest.raises(KdflowError, match="holds no saved model"):
        load_saved(tmp_path / "empty")
    import shutil
    shutil.copy(tmp_path / "hf" / "config.json", tmp_path / "enc" / "config.json")  # two kinds in one folder
    with pytest.raises(KdflowError, match="holds the files of several model kinds"):
        load_saved(tmp_path / "enc")
