"""The CLI: --help explains options with defaults; bad input is one sentence, exit 2, no traceback."""

import os
import subprocess
import sys

import yaml


def run(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "kdflow", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_help_lists_subcommands_and_defaults():
    top = run("--help")
    assert top.returncode == 0 and "teach" in top.stdout and "distill" in top.stdout and "evaluate" in top.stdout
    sub = run("distill", "--help")
    assert "--set KEY=VALUE" in sub.stdout and "--resume" in sub.stdout and "default" in sub.stdout
    assert "temperature (4.0)" in sub.stdout


def test_bad_input_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"path": str(tmp_path / "missing.json")}, "run": {"output_dir": str(tmp_path)}}))
    cases = [
        (("teach", str(tmp_path / "nope.yaml")), "does not exist"),
        (("distill", str(cfg), "--set", "distill.temprature=2"), "did you mean 'distill.temperature'"),
        (("distill", str(cfg), "--set", "distill.alpha=2"), "distill.alpha"),
        (("teach", str(cfg)), "missing.json' does not exist"),
        (("evaluate", str(tmp_path / "norun")), "norun' does not exist"),
        (("evaluate", str(tmp_path)), "without a run config"),
    ]
    for args, expected in cases:
        out = run(*args)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kdflow: error: ") and expected in lines[0], out.stderr
        assert "Traceback" not in out.stderr


def test_config_prints_resolved_defaults(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train: t.csv\n")
    out = run("config", str(cfg), "--set", "distill.mode=online")
    assert out.returncode == 0
    resolved = yaml.safe_load(out.stdout)
    assert resolved["distill"]["mode"] == "online" and resolved["distill"]["temperature"] == 4.0
