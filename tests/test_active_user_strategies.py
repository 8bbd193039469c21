"""Strategies users write: registered by name (``kdflow.active.register_strategy``), run by ``kdflow active``
(in-process, through the CLI's ``main``) and ``compare_strategies``, held to the contract of the built-in ones."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import kdflow
import user_strategies  # registers user_margin and user_far
from kdflow.active import compare_strategies, register_strategy, select
from kdflow.active.strategies import PoolOutputs, names
from kdflow.cli import main
from test_active_loop import al_cfg, taught  # noqa: F401  (the module's taught teacher, and its configs)

HERE = Path(__file__).resolve().parent


def test_registered_strategies_are_listed_and_bad_registrations_named(monkeypatch):
    from kdflow.active import strategies as st
    assert {"user_margin", "user_far"} <= set(names())
    for table in ("NEEDS", "SCORES", "PICKS", "TASKS_OF"):  # what this test registers goes with it
        monkeypatch.setattr(st, table, dict(getattr(st, table)))
    probs = PoolOutputs(n=3, probs=np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="exactly one"):
        register_strategy("both", lambda o: o.probs[:, 0], pick=user_strategies.farthest_from_labelled)
    with pytest.raises(ValueError, match="needs 'logits', which no pool pass computes"):
        register_strategy("odd", lambda o: o.probs[:, 0], needs=("logits",))
    with pytest.raises(ValueError, match="write it as score= to read mc_probs"):
        register_strategy("odd", pick=user_strategies.farthest_from_labelled, needs=("mc_probs",))
    with pytest.raises(ValueError, match="'margin' is already registered$"):
        register_strategy("margin", lambda o: o.probs[:, 0])
    with pytest.raises(ValueError, match="pass replace=True"):
        register_strategy("user_margin", lambda o: o.probs[:, 0])
    assert "both" not in names() and "odd" not in names()
    # what a user's function returns is held to the contract: one score per row; distinct candidates, at most k
    register_strategy("t_short", lambda o: o.probs[:1, 0], replace=True)
    register_strategy("t_dup", pick=lambda o, k, c, lab, seed: np.array([c[0], c[0]]), needs=(), replace=True)
    with pytest.raises(ValueError, match=r"shape \(1,\) for 3 examples"):
        select("t_short", probs, 1, np.arange(3), np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="distinct positions from candidates"):
        select("t_dup", probs, 2, np.arange(3), np.array([], dtype=np.int64))


def yaml_of(cfg: dict, folder: Path) -> str:
    path = folder / f"{cfg['run']['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_user_strategy_runs_through_kdflow_active_and_compare_strategies(taught, tmp_path):  # noqa: F811
    out = taught[0]
    # the user's margin (registered by this file's import) chooses what the built-in margin chooses, so the
    # rounds train on the same labels: the same batches, the same student, bit for bit (one process, one order)
    built_in = al_cfg(taught, "margin-builtin", strategy="margin", rounds=2)
    kdflow.active(built_in)
    mine = al_cfg(taught, "margin-user", strategy="user_margin", rounds=2)
    mine["distill"]["cache_dir"] = built_in["distill"]["cache_dir"]
    assert main(["active", yaml_of(mine, tmp_path), "--quiet"]) == 0
    states = [json.loads((out / n / "active" / "state.json").read_text()) for n in ("margin-builtin", "margin-user")]
    assert states[0]["batches"] == states[1]["batches"] and len(states[1]["batches"]) == 2
    assert [b["strategy"] for b in states[1]["batch_meta"]][1] == "user_margin"
    a, b = (load_file(out / n / "active" / "student" / "model.safetensors") for n in ("margin-builtin", "margin-user"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a selector over the whole pool, imported by the config from a .py file (a fresh process would need it)
    far = al_cfg(taught, "far", strategy="user_far", rounds=2,
                 strategy_modules=[str(HERE / "user_strategies.py")])
    assert main(["active", yaml_of(far, tmp_path), "--quiet"]) == 0
    state = json.loads((out / "far" / "active" / "state.json").read_text())
    assert [b["strategy"] for b in state["batch_meta"]] == ["initial (stratified)", "user_far"]
    assert len(state["batches"][1]) == 8 and not set(state["batches"][1]) & set(state["batches"][0])
    # and beside random in a label-efficiency comparison
    result = compare_strategies(al_cfg(taught, "cmp-user", rounds=2), ["random", "user_margin"],
                                              seeds=1, full=False)
    assert set(result["strategies"]) == {"random", "user_margin"}
    assert result["strategies"]["user_margin"]["labels"] == [8, 16]


def test_unknown_strategies_and_broken_modules_are_named_before_any_work(taught, tmp_path, capsys):  # noqa: F811
    cases = [
        (dict(strategy="nope"), "Unknown strategy 'nope' in active.strategy; choose one of random, "),
        (dict(strategy="margin", strategy_modules=[str(tmp_path / "missing.py")]), "missing.py', which is not a file"),
        (dict(strategy="margin", strategy_modules=["no_such_module_here"]), "'no_such_module_here', which cannot be "
                                                                              "imported"),
    ]
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('my bug')\n")
    cases.append((dict(strategy="margin", strategy_modules=[str(broken)]), "importing '.*broken.py' failed: "
                                                                           "RuntimeError: my bug"))
    for i, (active, message) in enumerate(cases):
        cfg = al_cfg(taught, f"bad-{i}", **active)
        assert main(["active", yaml_of(cfg, tmp_path), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert __import__("re").search(message, err), err
        assert not (taught[0] / f"bad-{i}").exists()
    with pytest.raises(kdflow.KdflowError, match="Unknown strategy 'nope' in --strategies"):
        compare_strategies(al_cfg(taught, "cmp-bad"), ["random", "nope"], seeds=1)
