"""report.md / report.html exist, reference existing images, and render in headless Chromium."""

import base64
import json
import re
import shutil
import subprocess

import pytest

import kdflow
from kdflow.diagnose.report import write_report

from conftest import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert, intents_json):
    out = tmp_path_factory.mktemp("report")
    raw = tiny_config(tiny_bert, intents_json, out, "rep", teach={"epochs": 2}, train={"epochs": 2})
    kdflow.teach(raw)
    kdflow.distill(raw)
    kdflow.api.export(str(out / "rep"), kdflow.MeasureOptions(int8=True, latency_examples=5, repeats=1))
    return out / "rep"


def test_report_files_reference_existing_images(run):
    md = (run / "report.md").read_text()
    refs = re.findall(r"\]\((plots/[\w.-]+\.png)\)", md)
    assert {"plots/curves.png", "plots/compare.png", "plots/confusions.png"} <= set(refs)
    for ref in refs:
        assert (run / ref).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| student-int8 |" in md and "| teacher |" in md
    page = (run / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(refs)
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    blob = json.loads((run / "metrics.json").read_text())
    assert {"teacher", "student", "deploy"} <= set(blob)
    again = write_report(run)  # regenerating is idempotent
    assert len(again["plots"]) == 3


def test_report_renders_in_headless_chromium(run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    probe = tmp_path / "probe.html"
    probe.write_text((run / "report.html").read_text().replace(
        "</body>", "<script>window.onload=()=>document.body.setAttribute('data-widths',"
                   "[...document.images].map(i=>i.complete?i.naturalWidth:0).join(','))</script></body>"))
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    widths = re.search(r'data-widths="([\d,]*)"', out.stdout)
    assert widths, out.stderr[-1500:]
    values = [int(w) for w in widths.group(1).split(",") if w]
    assert len(values) == 3 and all(w > 100 for w in values)  # every image decoded to a real picture
