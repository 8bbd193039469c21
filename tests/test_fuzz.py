"""Fuzz: hundreds of generated malformed inputs fed to ``kdflow.cli.main`` in-process.

Every case is refused with exit code 2 and exactly one line on stderr that names what is wrong (never a
traceback), before any training, and leaves every file it touched -- a copy of a trained run folder
among them -- byte for byte as it was. The cases are generated from a fixed seed: malformed configs
(every numeric and boolean key of every section is given a wrong type, a non-finite number or an
out-of-range value; unknown and duplicate keys, broken or non-mapping YAML, bad ``--set`` items),
malformed data files (binary, other encodings, folders, empty, broken JSON / JSONL, non-finite targets)
and malformed run folders and saved models of every kind (damaged metrics, configs, label maps,
weights and tokenizers) for ``evaluate``, ``report``, ``export`` and ``distill --resume``.
"""

from __future__ import annotations

import json
import random
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml
from pydantic import BaseModel

from kdflow.cli import main
from kdflow.config import MODEL_SPECS, Config
from kdflow.config.checks import dump_yaml

from conftest import tiny_config, tree_hash

SEED = 20251127
LABELS = ["balance", "flight", "music", "weather"]  # conftest's intents
TOKENS = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf", "huge": "1e999"}  # YAML that reads as non-finite


@dataclass
class World:
    """What the cases build on: the tiny teacher, the intents data, a trained run and saved models of every kind."""

    tiny_bert: str
    intents: str
    run: Path
    kinds: dict[str, Path]
    unchanged: dict = field(default_factory=dict)  # stamps() of the run and the models, taken once


@dataclass
class Case:
    """``build(world, folder)`` writes what the case needs under ``folder`` and returns the argv;
    the one-line message must contain ``expect`` (``{folder}`` is replaced by the case's folder)."""

    category: str
    name: str
    build: Callable[[World, Path], list[str]]
    expect: str


def base_raw(world: World, folder: Path, data: "dict | None" = None, **sections) -> dict:
    raw = tiny_config(world.tiny_bert, world.intents, folder / "runs", "fz", teach={"epochs": 1},
                      train={"epochs": 1}, **sections)
    if data is not None:
        raw["data"] = {"max_length": 32, **data}
    return raw


def write_yaml(path: Path, raw: dict, literal: "dict[str, str] | None" = None) -> str:
    """``raw`` as YAML; each ``literal`` placeholder string is replaced by the YAML text beside it (1e999,
    .nan), which no Python value dumps as."""
    text = dump_yaml(raw)  # a string that reads as a number ("1e-3") is quoted
    for placeholder, token in (literal or {}).items():
        text = text.replace(f"'{placeholder}'", token).replace(placeholder, token)
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ configs: every key of every section

COMMANDS = ["teach", "distill", "config", "layers", "active", "frontier", "evaluate", "compare"]


def argv_for(command: str, config: str, folder: Path, extra: list[str] = ()) -> list[str]:
    """The command line of ``command`` reading ``config`` (a refused config must stop every command)."""
    head = {"evaluate": ["evaluate", str(folder / "nowhere"), "--config", config],
            "compare": ["compare", str(folder / "t"), str(folder / "s"), "--config", config]}.get(command,
                                                                                               [command, config])
    return head + list(extra)


def scalar_fields(model: type[BaseModel]) -> list[tuple[str, type, dict, bool]]:
    """(name, int | float | bool, bounds, is a list of them) of every plain number or flag of a section."""
    out = []
    for name, f in model.model_fields.items():
        ann, listed = f.annotation, False
        args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) is typing.Union \
            else [ann]
        if len(args) != 1:
            continue
        ann = args[0]
        if typing.get_origin(ann) is list:
            ann, listed = typing.get_args(ann)[0], True
            ann = typing.get_args(ann)[0] if typing.get_origin(ann) is typing.Annotated else ann
            if typing.get_origin(ann) is typing.Union:
                ann = next(a for a in typing.get_args(ann) if a is not type(None))
        if ann not in (int, float, bool):
            continue
        bounds = {k: getattr(m, k) for m in f.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
        out.append((name, ann, bounds, listed))
    return out


def bad_values(kind: type, bounds: dict, rng: random.Random) -> list[tuple[str, object, dict]]:
    """(label, value, YAML literals) that ``kind`` (with ``bounds``) must refuse."""
    if kind is bool:
        return [("int-for-bool", rng.choice([0, 1]), {}), ("str-for-bool", rng.choice(["yes", "true", "on"]), {})]
    token = rng.choice(sorted(TOKENS))
    out = [("bool", rng.choice([True, False]), {}), ("str", rng.choice(["3", "0.5", "1e-3", "ten"]), {}),
           (f"non-finite-{token}", "@@X@@", {"@@X@@": TOKENS[token]})]
    if kind is int:
        out.append(("fraction", rng.choice([1.5, 2.0, 0.25]), {}))
    if "ge" in bounds or "gt" in bounds:
        low = bounds.get("ge", bounds.get("gt"))
        out.append(("below-range", (low - 1 if "ge" in bounds else low) if kind is int else
                    (low - 0.5 if "ge" in bounds else low), {}))
    if "le" in bounds or "lt" in bounds:
        high = bounds.get("le", bounds.get("lt"))
        out.append(("above-range", (high + 1 if "le" in bounds else high) if kind is int else
                    (high + 0.5 if "le" in bounds else high), {}))
    return out


def sections() -> list[tuple[str, type[BaseModel], dict]]:
    """(dotted section, its class, the keys it needs beside the one under test)."""
    out = [("train", Config.model_fields["train"].annotation, {}), ("teach", Config.model_fields["teach"].annotation,
                                                                      {}),
           ("distill", Config.model_fields["distill"].annotation, {}),
           ("data", Config.model_fields["data"].annotation, {}),
           ("active", Config.model_fields["active"].annotation, {}),
           ("frontier", Config.model_fields["frontier"].annotation, {}),
           ("run", Config.model_fields["run"].annotation, {})]
    from kdflow.models import KINDS
    for kind, spec in MODEL_SPECS.items():  # a teacher-only kind as the teacher, with the keys it needs
        out.append(("model.teacher", spec, dict(KINDS[kind].tiny)) if KINDS[kind].fixed else
                   ("model.student", spec, {"kind": kind}))
    return out


def config_value_case(dotted: str, key: str, base: dict, value, literal: dict, listed: bool, command: str,
                      label: str) -> Case:
    def build(world: World, folder: Path) -> list[str]:
        raw = base_raw(world, folder, data={"path": str(folder / "absent.json")})  # accepted = a wrong message
        node = raw
        for part in dotted.split("."):
            node = node.setdefault(part, {})
        node.update(base)
        node[key] = [value] if listed else value
        return argv_for(command, write_yaml(folder / "c.yaml", raw, literal), folder)
    return Case("config: " + ("wrong type" if label in ("bool", "str", "fraction", "int-for-bool", "str-for-bool")
                              else "non-finite" if label.startswith("non-finite") else "out of range"),
                f"{dotted}.{key}" + (f"[{base['kind']}]" if base else "") + f"-{label}-{command}", build,
                f"'{dotted}.{key}")


def config_value_cases(rng: random.Random) -> list[Case]:
    cases = []
    for dotted, cls, base in sections():
        for key, kind, bounds, listed in scalar_fields(cls):
            if key == "kind":
                continue
            for label, value, literal in bad_values(kind, bounds, rng):
                cases.append(config_value_case(dotted, key, base, value, literal, listed, rng.choice(COMMANDS), label))
    return cases


def text_config_case(category: str, name: str, text: "str | bytes", expect: str, command: str = "teach",
                     extra: list[str] = ()) -> Case:
    def build(world: World, folder: Path) -> list[str]:
        path = folder / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return argv_for(command, str(path), folder, extra)
    return Case(category, name, build, expect)


def misspelt(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    return word[:i] + word[i + 1:] + ("x" if len(word) < 3 else "") if rng.random() < 0.5 else \
        word[:i] + rng.choice("qzj") + word[i:]


def config_file_cases(rng: random.Random) -> list[Case]:
    cases = []
    for section, cls, _ in sections()[:7]:
        key = rng.choice(sorted(cls.model_fields))
        bad = misspelt(key, rng)
        while bad in cls.model_fields:
            bad = misspelt(key, rng)
        text = f"data:\n  path: x.json\n  {bad}: 1\n" if section == "data" else \
            f"data:\n  path: x.json\n{section}:\n  {bad}: 1\n"
        cases.append(text_config_case("config: unknown key", f"{section}.{bad}", text, f"'{section}.{bad}'",
                                      rng.choice(COMMANDS)))
    for top in ("modle", "distil", "trian", "datta"):
        cases.append(text_config_case("config: unknown key", top, f"data:\n  path: x.json\n{top}: {{}}\n",
                                      f"'{top}'", rng.choice(COMMANDS)))
    dupes = [("top section", "data:\n  path: a.json\ntrain:\n  epochs: 1\ndata:\n  path: b.json\n", "'data'"),
             ("nested key", "data:\n  path: a.json\ntrain:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", "'lr'"),
             ("flow mapping", "data: {path: a.json, path: b.json}\n", "'path'"),
             ("model spec", "data:\n  path: a.json\nmodel:\n  student:\n    kind: hf\n    kind: encoder\n", "'kind'"),
             ("list item", "data:\n  path: a.json\ndistill:\n  extra_teachers:\n  - name: a\n    name: b\n", "'name'")]
    for name, text, key in dupes:
        cases.append(text_config_case("config: duplicate key", name, text, f"key {key} twice", rng.choice(COMMANDS)))
    broken = [("unclosed list", "data:\n  path: [a.json\n"), ("unclosed quote", 'data:\n  path: "a.json\n'),
              ("bad indent", "data:\n  path: a.json\n   train: 1\n"), ("tab", "data:\n\tpath: a.json\n"),
              ("key in value", "data: path: a.json\n"), ("stray colon", ": x\ndata: 1\n"),
              ("unhashable key", "? [a, b]\n: 1\n"), ("bad anchor", "data: *nowhere\n"),
              ("python tag", "data: !!python/object:os.system {}\n"), ("deep nesting", "a: " + "[" * 2000 + "]" * 2000)]
    for name, text in broken:
        cases.append(text_config_case("config: broken YAML", name, text, "Config file", rng.choice(COMMANDS)))
    for name, text in [("list", "- data\n- train\n"), ("scalar", "42\n"), ("string", "just some words\n"),
                       ("null section", "data: null\n"), ("section is a number", "data:\n  path: a\ntrain: 5\n"),
                       ("section is a list", "data:\n  path: a\ndistill: [1, 2]\n")]:
        expect = "must hold a mapping" if name in ("list", "scalar", "string") else "'data'" if "null" in name else \
            "'train'" if "number" in name else "'distill'"
        cases.append(text_config_case("config: not a mapping", name, text, expect, rng.choice(COMMANDS)))
    raw_bytes = bytes(rng.randrange(256) for _ in range(400))
    cases += [
        text_config_case("config: file", "binary", b"\x00\x01" + raw_bytes, "not a text file"),
        text_config_case("config: file", "latin-1", "data:\n  path: caf\xe9.json\n".encode("latin-1"), "not UTF-8"),
        text_config_case("config: file", "utf-16 read, then its unknown key refused",
                         "data:\n  path: x.json\ntrain:\n  epochz: 1\n".encode("utf-16"), "'train.epochz'"),
        text_config_case("config: file", "utf-8 BOM read, then its non-finite value refused",
                         b"\xef\xbb\xbfdata:\n  path: x.json\ndistill:\n  alpha: .nan\n", "'distill.alpha'"),
        Case("config: file", "a folder", lambda w, f: ["teach", str(f)], "folder, not a file"),
        Case("config: file", "missing", lambda w, f: ["distill", str(f / "nope.yaml")], "does not exist"),
    ]
    return cases


def set_case(name: str, item: str, expect: str, command: str) -> Case:
    def build(world: World, folder: Path) -> list[str]:
        raw = base_raw(world, folder, data={"path": str(folder / "absent.json")})
        return argv_for(command, write_yaml(folder / "c.yaml", raw), folder, ["--set", item])
    return Case("config: bad --set", f"{name}-{command}", build, expect)


def set_cases(rng: random.Random) -> list[Case]:
    items = [("no equals sign", "train.lr", "section.key=value"), ("no key", "=3", "no key"),
             ("empty part", "train..lr=0.1", "empty part"), ("no value", "train.lr=", "no value"),
             ("blank value", "distill.alpha=  ", "no value"), ("value as section", "train.lr.x=1", "'lr' is a value"),
             ("section as value", "train=3", "'train'"), ("unknown key", "train.lrr=0.1", "'train.lr'"),
             ("nan word", "train.lr=nan", "'train.lr'"), ("nan", "distill.alpha=.nan", "'distill.alpha'"),
             ("inf", "distill.temperature=.inf", "'distill.temperature'"), ("1e999", "train.lr=1e999", "'train.lr'"),
             ("negative infinity", "train.max_grad_norm=-.inf", "'train.max_grad_norm'"),
             ("bool for int", "train.epochs=true", "'train.epochs'"),
             ("float for int", "train.seed=1.5", "'train.seed'"),
             ("seed too big", f"train.seed={2 ** 32}", "'train.seed'"),
             ("negative seed", "data.seed=-1", "'data.seed'"),
             ("duplicate in flow", "distill.layer_losses={hidden: 1, hidden: 2}", "twice"),
             ("broken flow", "model.student.teacher_layers=[1, 2", "'model.student.teacher_layers'"),
             ("string for bool", "run.quiet=maybe", "'run.quiet'")]
    return [set_case(name, item, expect, rng.choice(["teach", "distill", "config", "layers", "evaluate"]))
            for name, item, expect in items]


# ------------------------------------------------------------------ data files

def intents_rows(world: World) -> list[list[str]]:
    return json.loads(Path(world.intents).read_text())["train"]


def csv_text(rows: list[list], header: str = "text,label") -> str:
    return header + "\n" + "".join(f"{t},{y}\n" for t, y in rows)


def data_case(category: str, name: str, filename: str, content: Callable[[World, random.Random], "bytes | str | None"],
              expect: str, key: str = "train", rng_seed: int = 0, **data) -> Case:
    """A config whose ``data.<key>`` is ``filename`` holding ``content`` (None: a folder); ``teach`` must refuse it."""
    def build(world: World, folder: Path) -> list[str]:
        path = folder / filename
        made = content(world, random.Random(rng_seed))
        if made is None:
            path.mkdir()
        else:
            path.write_bytes(made if isinstance(made, bytes) else made.encode())
        spec = {key: str(path), **data}
        if key in ("validation", "test", "unlabelled"):
            spec["train"] = write_csv(folder / "train.csv", world)
        return ["teach", write_yaml(folder / "c.yaml", base_raw(world, folder, data=spec))]
    return Case(category, name, build, expect.replace("{file}", filename))


def write_csv(path: Path, world: World) -> str:
    path.write_text(csv_text(intents_rows(world)))
    return str(path)


def regression_rows(world: World, rng: random.Random, bad: str, row: int) -> list[list]:
    rows = [[t, f"{rng.uniform(0, 5):.3f}"] for t, _ in intents_rows(world)[:40]]
    rows[row][1] = bad
    return rows


def data_cases(rng: random.Random) -> list[Case]:
    noise = bytes(rng.randrange(256) for _ in range(2000))
    cases = []
    for suffix in ("csv", "tsv", "json", "jsonl", "parquet"):
        cases.append(data_case("data: binary file", f"random bytes .{suffix}", f"bin.{suffix}",
                               lambda w, r: b"\x00" + noise, "bin." + suffix))
    for suffix in ("csv", "json", "jsonl"):
        cases.append(data_case("data: encoding", f"latin-1 .{suffix}", f"latin.{suffix}",
                               lambda w, r, s=suffix: _latin(w, r, s), "not UTF-8 text"))
    cases += [
        data_case("data: encoding", "utf-16 without BOM", "u16.csv",
                  lambda w, r: csv_text(intents_rows(w)).encode("utf-16-le"), "not a text file"),
        data_case("data: encoding", "cp1252 quote marks", "quotes.csv",
                  lambda w, r: b"text,label\n\x93book a flight\x94,flight\n", "line 2"),
        data_case("data: folder", "a folder named .csv", "dir.csv", lambda w, r: None, "dir.csv"),
        data_case("data: folder", "data.path a folder named .json", "dir.json", lambda w, r: None, "folder, not a file",
                  key="path"),
        data_case("data: folder", "validation a folder", "val.csv", lambda w, r: None, "folder, not a file",
                  key="validation", format="csv"),
        data_case("data: empty", "empty csv", "e.csv", lambda w, r: b"", "is empty"),
        data_case("data: empty", "blank jsonl", "e.jsonl", lambda w, r: "\n  \n\n", "is empty"),
        data_case("data: empty", "empty json", "e.json", lambda w, r: b"", "is empty"),
        data_case("data: empty", "header-only csv", "h.csv", lambda w, r: "text,label\n", "holds no rows"),
        data_case("data: empty", "header-only tsv", "h.tsv", lambda w, r: "text\tlabel\n", "holds no rows"),
        data_case("data: empty", "empty list json", "l.json", lambda w, r: "[]", "holds no rows"),
        data_case("data: empty", "empty validation csv", "v.csv", lambda w, r: "", "is empty", key="validation"),
        data_case("data: empty", "empty test csv", "t.csv", lambda w, r: "text,label\n", "holds no rows",
                  key="test"),
        data_case("data: broken table", "ragged csv", "r.csv", lambda w, r: "text,label\na,x\nb,y,z\n", "r.csv"),
        data_case("data: broken table", "unlabelled binary", "u.csv", lambda w, r: b"\x00\x01" + noise,
                  "data.unlabelled", key="unlabelled"),
        data_case("data: broken table", "npz not a zip", "x.npz", lambda w, r: noise, "not an .npz archive"),
    ]
    for i in range(6):
        n = rng.randrange(2, 30)
        cases.append(data_case("data: broken JSON", f"jsonl line {n} cut (file {i})", f"b{i}.jsonl",
                               lambda w, r, n=n: _jsonl(w, n, lambda line: line[: len(line) // 2]), f"Line {n} of"))
    for i, (what, line) in enumerate([("a list", "[1, 2]"), ("a number", "7"), ("a string", '"text"'),
                                      ("null", "null"), ("a trailing comma", '{"text": "a", "label": "x",}')]):
        n = rng.randrange(2, 30)
        cases.append(data_case("data: broken JSON", f"jsonl line {n} is {what}", f"k{i}.jsonl",
                               lambda w, r, n=n, line=line: _jsonl(w, n, lambda _: line), f"Line {n} of"))
    for i in range(4):
        cut = rng.randrange(10, 400)
        cases.append(data_case("data: broken JSON", f"json cut at {cut}", f"c{i}.json",
                               lambda w, r, cut=cut: json.dumps([{"text": t, "label": y} for t, y in
                                                                 intents_rows(w)])[:cut], "not valid JSON"))
    for i, (what, text, expect) in enumerate([("a number", "5", "holds a number"), ("null", "null", "holds null"),
                                              ("a string", '"rows"', "holds a string"),
                                              ("a dict of scalars", '{"text": "a", "label": "b"}', "column 'text'"),
                                              ("a list of numbers", "[1, 2, 3]", "item 0"),
                                              ("a list of lists", '[["a", "x"], 5]', "item 0")]):
        cases.append(data_case("data: broken JSON", f"json is {what}", f"s{i}.json", lambda w, r, t=text: t, expect))
    cases += _clinc_cases(noise) + _regression_cases(rng) + _missing_label_cases(rng)
    return cases


MISSING = {"csv": ["NaN", "nan", "null", "None", "NULL", ""], "jsonl": ["NaN", "null", '"None"', '""', '"nan"'],
           "json": ["null", '"None"', '"NaN"', '"  "']}  # as written in the file (JSON: its literal)


def _missing_label_cases(rng: random.Random) -> list[Case]:
    """A class label that reads as a missing value, in every format and spelling: refused with its row."""
    cases = []
    for fmt, spellings in MISSING.items():
        for i, bad in enumerate(spellings):
            row = rng.randrange(1, 30)

            def content(w, r, fmt=fmt, bad=bad, row=row):
                rows = intents_rows(w)[:30]
                if fmt == "csv":
                    return csv_text([[t, bad if j == row else y] for j, (t, y) in enumerate(rows)])
                cells = [f'{{"text": {json.dumps(t)}, "label": {bad if j == row else json.dumps(y)}}}'
                         for j, (t, y) in enumerate(rows)]
                return "\n".join(cells) + "\n" if fmt == "jsonl" else "[" + ", ".join(cells) + "]"
            cases.append(data_case("data: missing label", f"{fmt} label {bad or 'empty'} in row {row}",
                                   f"miss{i}.{fmt}", content, f"Row {row} of"))
    return cases


def _latin(world: World, rng: random.Random, suffix: str) -> bytes:
    rows = [[t, y] for t, y in intents_rows(world)[:20]]
    i = rng.randrange(len(rows))
    rows[i][0] = "caf\xe9 " + rows[i][0]
    if suffix == "csv":
        return csv_text(rows).encode("latin-1")
    if suffix == "json":
        return json.dumps([{"text": t, "label": y} for t, y in rows], ensure_ascii=False).encode("latin-1")
    return "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in rows).encode("latin-1")


def _jsonl(world: World, n: int, damage: Callable[[str], str]) -> str:
    lines = [json.dumps({"text": t, "label": y}) for t, y in intents_rows(world)[:30]]
    lines[n - 1] = damage(lines[n - 1])
    return "\n".join(lines) + "\n"


def _clinc_cases(noise: bytes) -> list[Case]:
    layouts = [("cut", lambda w: Path(w.intents).read_text()[:500], "not valid JSON"),
               ("train is a number", lambda w: '{"train": 5}', "key 'train' holds a number"),
               ("val is an object", lambda w: json.dumps({"train": intents_rows(w), "val": {"a": 1}}),
                "key 'val' holds an object"),
               ("a row of three", lambda w: json.dumps({"train": intents_rows(w)[:5] + [["a", "b", "c"]]}),
                "train[5]"),
               ("a row without text", lambda w: json.dumps({"train": [["", "flight"]] + intents_rows(w)}),
                "train[0] has no text"),
               ("no train", lambda w: json.dumps({"test": intents_rows(w)}), "CLINC150 layout"),
               ("binary", lambda w: b"\x00" + noise, "not a text file"),
               ("a list", lambda w: json.dumps(intents_rows(w)), "CLINC150 layout")]
    return [data_case("data: CLINC layout", name, f"clinc{i}.json", lambda w, r, make=make: make(w), expect, key="path")
            for i, (name, make, expect) in enumerate(layouts)]


def _regression_cases(rng: random.Random) -> list[Case]:
    cases = []
    for i, bad in enumerate(["inf", "-inf", "1e39", "1e999", "-Infinity", "NaN"]):
        row = rng.randrange(1, 30)
        expect = f"row {row}"
        cases.append(data_case("data: non-finite target", f"csv target {bad} in row {row}", f"reg{i}.csv",
                               lambda w, r, bad=bad, row=row: csv_text(regression_rows(w, r, bad, row)), expect,
                               task="regression", rng_seed=i))
    for i, bad in enumerate(["Infinity", "-Infinity", "1e400", "NaN"]):
        row = rng.randrange(1, 30)
        cases.append(data_case("data: non-finite target", f"jsonl target {bad} in row {row}", f"reg{i}.jsonl",
                               lambda w, r, bad=bad, row=row: "".join(
                                   f'{{"text": {json.dumps(t)}, "label": {y}}}\n'
                                   for t, y in regression_rows(w, r, bad, row)),
                               f"row {row}" if bad != "NaN" else f"Row {row}", task="regression", rng_seed=i))
    row = rng.randrange(1, 30)
    cases.append(data_case("data: non-finite target", f"utf-16 csv (read) with inf in row {row}", "reg16.csv",
                           lambda w, r, row=row: csv_text(regression_rows(w, r, "inf", row)).encode("utf-16"),
                           f"row {row}",
                           task="regression", rng_seed=9))
    row = rng.randrange(1, 20)
    values = "".join(json.dumps({"values": [1.0, 2.0] if i != row else [1.0, "Infinity"], "label": "ab"[i % 2]})
                     .replace('"Infinity"', "Infinity") + "\n" for i in range(20))
    seq = data_case("data: non-finite target", f"sequence with inf in row {row}", "seq.jsonl", lambda w, r: values,
                    f"Row {row}", values_column="values")
    cases.append(_encoder_teacher(seq))
    return cases


def _encoder_teacher(case: Case) -> Case:
    """``case`` with a teacher reading numeric sequences (kind encoder, input_dim 1)."""
    def build(world: World, folder: Path) -> list[str]:
        argv = case.build(world, folder)
        raw = yaml.safe_load(Path(argv[1]).read_text())
        raw["model"]["teacher"] = {"kind": "encoder", "input_dim": 1, "num_layers": 1, "hidden_size": 16,
                                   "num_heads": 2}
        raw["model"]["student"] = {"kind": "encoder", "input_dim": 1, "num_layers": 1, "hidden_size": 16,
                                   "num_heads": 2}
        return ["teach", write_yaml(Path(argv[1]), raw)]
    return Case(case.category, case.name, build, case.expect)


# ------------------------------------------------------------------ saved models and run folders

CONFIG_OF = {"hf": "config.json", "vision": "config.json", "encoder": "kdflow_encoder.json",
             "dkvb": "kdflow_dkvb.json"}
LABELS_FILE = "kdflow_labels.json"


def cut(frac: float) -> Callable[[Path, random.Random], None]:
    def damage(path: Path, rng: random.Random) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * frac)])
    return damage


def garble(path: Path, rng: random.Random) -> None:
    path.write_bytes(bytes(rng.randrange(256) for _ in range(path.stat().st_size)))


def put(content: "str | bytes") -> Callable[[Path, random.Random], None]:
    def damage(path: Path, rng: random.Random) -> None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


def remove(path: Path, rng: random.Random) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def folderize(path: Path, rng: random.Random) -> None:
    remove(path, rng)
    path.mkdir()


def edit_json(change: Callable[[dict], None]) -> Callable[[Path, random.Random], None]:
    def damage(path: Path, rng: random.Random) -> None:
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    return damage


def model_damages(kind: str) -> list[tuple[str, str, Callable, str]]:
    """(what, file, damage, expected words) for a saved model folder of ``kind``."""
    config, own = CONFIG_OF[kind], kind in ("encoder", "dkvb")  # kdflow's own loader, or transformers'
    weights = "model.safetensors" if own else "does not hold"
    out = [("weights missing", "model.safetensors", remove, "model.safetensors" if own else "does not hold"),
           ("weights cut in half", "model.safetensors", cut(0.5), weights),
           ("weights overwritten", "model.safetensors", garble, weights),
           ("weights empty", "model.safetensors", put(b""), weights),
           ("config cut", config, cut(0.5), config), ("config a list", config, put("[1, 2]"), config),
           ("config binary", config, put(b"\x00\xff" * 64), config), ("config a folder", config, folderize, config),
           ("labels cut", LABELS_FILE, cut(0.5), LABELS_FILE),
           ("labels a string", LABELS_FILE, put('{"task": "classification", "labels": "abc"}'), LABELS_FILE),
           ("labels repeated", LABELS_FILE, put('{"task": "classification", "labels": ["a", "a"]}'), LABELS_FILE),
           ("labels of another task", LABELS_FILE, put(json.dumps({"task": "ranking", "labels": LABELS})),
            LABELS_FILE),
           ("labels of other classes", LABELS_FILE, put('{"task": "classification", "labels": ["x", "y"]}'),
            "other labels"),
           ("labels a list", LABELS_FILE, put(json.dumps(LABELS)), LABELS_FILE),
           ("labels latin-1", LABELS_FILE, put('{"labels": ["caf\xe9"]}'.encode("latin-1")), "not UTF-8")]
    if kind == "vision":
        out += [("image preprocessing cut", "kdflow_image.json", cut(0.5), "kdflow_image.json"),
                ("image preprocessing std 0", "kdflow_image.json", edit_json(lambda m: m.update(std=[0.0])),
                 "kdflow_image.json"),
                ("image preprocessing NaN mean", "kdflow_image.json",
                 put('{"mean": [NaN], "std": [1.0], "channels": 1, "size": null}'), "kdflow_image.json"),
                ("image preprocessing extra key", "kdflow_image.json", edit_json(lambda m: m.update(shape=3)),
                 "kdflow_image.json")]
    else:
        out += [("tokenizer cut", "tokenizer.json", cut(0.3), "tokenizer"),
                ("tokenizer config binary", "tokenizer_config.json", put(b"\x00" * 40), "tokenizer"),
                ("tokenizer files removed", "tokenizer_config.json",
                 lambda p, r: [f.unlink() for f in p.parent.glob("*") if f.name.startswith(("tokenizer", "vocab",
                                                                                             "special"))],
                 "has no tokenizer")]
    if kind == "encoder":
        out += [("size of the wrong type", config, edit_json(lambda m: m.update(hidden_size="big")), "hidden_size"),
                ("unknown size", config, edit_json(lambda m: m.update(depth=3)), config),
                ("other sizes than the weights", config, edit_json(lambda m: m.update(hidden_size=24)),
                 "model.safetensors")]
    if kind == "dkvb":
        out += [("negative heads", config, edit_json(lambda m: m.update(heads=-1)), "heads"),
                ("no encoder type", config, edit_json(lambda m: m["encoder"].pop("model_type")), "DKVB")]
    return out


def model_case(kind: str, what: str, name: str, damage: Callable, expect: str, seed: int) -> Case:
    def build(world: World, folder: Path) -> list[str]:
        model = folder / kind
        shutil.copytree(world.kinds[kind], model)
        damage(model / name, random.Random(seed))
        config = write_yaml(folder / "c.yaml", base_raw(world, folder))
        return ["evaluate", str(model), "--config", config]
    return Case(f"saved model: {kind}", what, build, expect)


def run_case(category: str, what: str, damages: list[tuple[str, Callable]], argv: Callable[[Path, str], list[str]],
             expect: str, seed: int) -> Case:
    """A copy of the trained run at ``folder/runs/fz``, ``damages`` applied (file relative to the run), then
    ``argv(run, config)`` (config: the run's own settings, for ``--resume``)."""
    def build(world: World, folder: Path) -> list[str]:
        run = folder / "runs" / "fz"
        shutil.copytree(world.run, run)
        rng = random.Random(seed)
        for name, damage in damages:
            damage(run / name, rng)
        config = write_yaml(folder / "c.yaml", base_raw(world, folder))
        return argv(run, config)
    return Case(category, what, build, expect)


def saved_model_cases(rng: random.Random) -> list[Case]:
    return [model_case(kind, what, name, damage, expect, rng.randrange(10 ** 6))
            for kind in CONFIG_OF for what, name, damage, expect in model_damages(kind)]


def run_folder_cases(rng: random.Random) -> list[Case]:
    def evaluate(*extra):
        return lambda run, config: ["evaluate", str(run), *extra]

    def report(run, config):
        return ["report", str(run)]

    def export(run, config):
        return ["export", str(run), "--int8", "--latency-examples", "2", "--repeats", "1", "--no-memory"]

    def resume(command):
        return lambda run, config: [command, config, "--resume"]

    cases = []
    config_damages = [("binary", put(b"\x00\x01\x02" * 50), "not a text file"),
                      ("latin-1", put("data:\n  path: caf\xe9.json\n".encode("latin-1")), "not UTF-8"),
                      ("a list", put("- data\n- run\n"), "must hold a mapping"),
                      ("broken YAML", put("data: {path: [x\n"), "not valid YAML"),
                      ("empty", put(""), "'data'"),
                      ("a folder", folderize, "folder, not a file"),
                      ("duplicate section", lambda p, r: p.write_text(p.read_text() + "run:\n  quiet: true\n"),
                       "key 'run' twice"),
                      ("non-finite rate", lambda p, r: p.write_text(p.read_text().replace("lr: 0.005", "lr: .nan")),
                       "'train.lr'"),
                      ("unknown key", lambda p, r: p.write_text(p.read_text() + "extra: 1\n"), "'extra'")]
    for what, damage, expect in config_damages:
        cases.append(run_case("run folder: evaluate", f"config.yaml {what}", [("config.yaml", damage)], evaluate(),
                              expect, rng.randrange(10 ** 6)))
    for what, name, damage, expect in model_damages("hf"):
        if rng.random() < 0.5 or what.startswith("weights"):
            cases.append(run_case("run folder: evaluate", f"student {what}", [(f"student/{name}", damage)],
                                  evaluate(), expect, rng.randrange(10 ** 6)))
    cases.append(run_case("run folder: evaluate", "student missing", [("student", remove)], evaluate(),
                          "has no student", 0))
    for what, name, damage, expect in rng.sample(model_damages("hf"), 4):
        cases.append(run_case("run folder: evaluate", f"teacher {what}", [(f"teacher/{name}", damage)],
                              evaluate("--role", "teacher"), expect, rng.randrange(10 ** 6)))
    cases += _record_cases(rng, report, export, resume)
    return cases


METRICS_DAMAGES = [("cut", cut(0.5), "metrics.json' is not valid JSON"),
                   ("binary", put(b"\x00" * 10 + b"{}"), "metrics.json' is not a text file"),
                   ("a list", put("[1, 2]"), "metrics.json' holds a list"),
                   ("a number", put("5"), "metrics.json' holds a number"),
                   ("student a number", put('{"student": 5}'), "under 'student'"),
                   ("deploy a string", put('{"deploy": "fast"}'), "under 'deploy'"),
                   ("deploy rows of numbers", put('{"deploy": [1, 2]}'), "'deploy' rows"),
                   ("test a string", put('{"student": {"test": "good"}}'), "another shape"),
                   ("accuracy a word", put('{"teacher": {"test": {"accuracy": "high"}}}'), "another shape"),
                   ("confusions of numbers", put('{"student": {"test": {"accuracy": 0.5, "top_confusions": [3]}}}'),
                    "another shape"),
                   ("a folder", folderize, "folder, not a file")]
CSV_DAMAGES = [("binary", put(b"\x00\x01" * 40), "metrics.csv' is not a text file"),
               ("no role column", put("x,y\n1,2\n"), "Line 2 of"),
               ("epoch a word", put("role,epoch,loss\nteacher,one,0.5\n"), "Line 2 of"),
               ("loss a word", put("role,epoch,loss\nteacher,0,0.5\nteacher,1,low\n"), "Line 3 of"),
               ("ragged row", put("role,epoch,loss\nteacher,0,0.5,9\n"), "Line 2 of"),
               ("short row", put("role,epoch,loss\nteacher,0\n"), "Line 2 of"),
               ("latin-1", put("role,epoch,loss\nt\xe9acher,0,0.5\n".encode("latin-1")), "not UTF-8"),
               ("NUL in a quoted cell", put('role,epoch,loss\n"te\x00",0,1\n'), "metrics.csv")]


def _record_cases(rng: random.Random, report, export, resume) -> list[Case]:
    cases = []
    for what, damage, expect in METRICS_DAMAGES:
        cases.append(run_case("run folder: report", f"metrics.json {what}", [("metrics.json", damage)], report,
                              expect, rng.randrange(10 ** 6)))
    for what, damage, expect in CSV_DAMAGES:
        cases.append(run_case("run folder: report", f"metrics.csv {what}", [("metrics.csv", damage)], report,
                              expect, rng.randrange(10 ** 6)))
    cases += [run_case("run folder: report", "active_compare.json cut", [("active_compare.json", put('{"a": '))],
                       report, "active_compare.json", 0),
              run_case("run folder: report", "active_compare.json a list", [("active_compare.json", put("[]"))],
                       report, "active_compare.json", 0),
              run_case("run folder: report", "no metrics.json", [("metrics.json", remove)], report,
                       "holds no metrics.json", 0)]
    for what, damage, expect in rng.sample(METRICS_DAMAGES[:4], 2) + rng.sample(CSV_DAMAGES, 2):
        name = "metrics.json" if "json" in expect else "metrics.csv"
        cases.append(run_case("run folder: export", f"{name} {what}", [(name, damage)], export, expect,
                              rng.randrange(10 ** 6)))
    for what, name, damage, expect in [("config.yaml binary", "config.yaml", put(b"\x00" * 9), "not a text file"),
                                       ("student weights missing", "student/model.safetensors", remove,
                                        "does not hold"),
                                       ("teacher labels cut", f"teacher/{LABELS_FILE}", cut(0.5), LABELS_FILE),
                                       ("student missing", "student", remove, "holds no saved student")]:
        cases.append(run_case("run folder: export", what, [(name, damage)], export, expect, 0))
    resumed = [("metrics.json cut", "metrics.json", cut(0.5), "metrics.json"),
               ("metrics.json a list", "metrics.json", put("[]"), "metrics.json"),
               ("metrics.csv ragged", "metrics.csv", put("role,epoch,loss\nteacher,0,0.5,9\n"), "metrics.csv"),
               ("metrics.csv binary", "metrics.csv", put(b"\x00" * 30), "metrics.csv"),
               ("teacher config cut", "teacher/config.json", cut(0.5), "config.json"),
               ("teacher labels a string", f"teacher/{LABELS_FILE}", put('{"labels": "x"}'), LABELS_FILE),
               ("teacher weights cut", "teacher/model.safetensors", cut(0.5), "does not hold"),
               ("teacher tokenizer cut", "teacher/tokenizer.json", cut(0.3), "tokenizer")]
    for what, name, damage, expect in resumed:
        cases.append(run_case("run folder: distill --resume", what, [(name, damage)], resume("distill"), expect, 0))
    for what, name, damage, expect in resumed[:4]:
        cases.append(run_case("run folder: teach --resume", what, [(name, damage)], resume("teach"), expect, 0))
    return cases


# ------------------------------------------------------------------ every path argument, every wrong kind of path

# what a path argument wants -> the wrong paths to give it, each with the sentence that must name it
PATH_KINDS = {
    "file": [("missing", "does not exist"), ("empty folder", "is an empty folder, not a file"),
             ("folder", "is a folder, not a file")],
    "folder": [("missing", "does not exist"), ("empty folder", "is an empty folder"), ("file", "is a file, not a folder")],
    "output folder": [("file", "is a file, not a folder")],  # created when missing; empty is fine
}
COMMANDS_READING_CONFIG = ["teach", "distill", "active", "frontier", "layers", "check"]
# commands that refuse the key itself, whatever its path (said first, and rightly): not drawn for it
REFUSE_THE_KEY = {"data.unlabelled": {"active"}, "model.student.name": {"frontier"},
                  "distill.extra_teachers[0].name": {"frontier", "active"}}


def make_path(path: Path, what: str) -> str:
    if what == "folder":
        path.mkdir()
        (path / "part-0.csv").write_text("text,label\n")
    elif what == "empty folder":
        path.mkdir()
    elif what == "file":
        path.write_text("text,label\nhello,flight\n")
    return str(path)


def config_with(world: World, folder: Path, key: str, value: str) -> str:
    """The base config with ``key`` (dotted; ``[0]`` indexes a list) set to ``value``; 5 epochs (the frontier's
    rungs must fit), so every command reaches its path checks."""
    raw = base_raw(world, folder)
    raw["train"]["epochs"] = 5
    if key.startswith("data."):
        name = key.split(".", 1)[1]
        data = {"train": write_csv(folder / "train.csv", world), "format": "csv"} if name != "path" else {}
        raw["data"] = {"max_length": 32, **data, **({"extra_tests": {"x": value}} if name == "extra_tests.x"
                                                     else {name: value})}
    elif key == "distill.extra_teachers[0].name":
        raw["distill"] = {"extra_teachers": [{"name": value}]}
    else:
        section, name = key.rsplit(".", 1)
        node = raw
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[name] = value
    return write_yaml(folder / "c.yaml", raw)


def path_arguments() -> list[tuple[str, str, Callable[[World, Path, str, str], list[str]]]]:
    """(argument, the kind of path it wants, argv(world, folder, path, command)) of every path-taking argument
    of every command: positional and option paths, and each path key of the config."""
    def base(w, f):
        return write_yaml(f / "c.yaml", base_raw(w, f))
    out = [("CONFIG", "file", lambda w, f, p, c: [c, p]),
           ("evaluate RUN_OR_MODEL", "folder", lambda w, f, p, c: ["evaluate", p, "--config", base(w, f)]),
           ("evaluate --config", "file", lambda w, f, p, c: ["evaluate", str(w.kinds["hf"]), "--config", p]),
           ("compare TEACHER", "folder", lambda w, f, p, c: ["compare", p, str(w.kinds["hf"]), "--config", base(w, f)]),
           ("compare STUDENT", "folder", lambda w, f, p, c: ["compare", str(w.kinds["hf"]), p, "--config", base(w, f)]),
           ("compare --config", "file", lambda w, f, p, c: ["compare", str(w.kinds["hf"]), str(w.kinds["hf"]),
                                                            "--config", p]),
           ("export RUN", "folder", lambda w, f, p, c: ["export", p, "--onnx"]),
           ("report RUN", "folder", lambda w, f, p, c: ["report", p]),
           ("layers --teacher", "folder", lambda w, f, p, c: ["layers", base(w, f), "--teacher", p]),
           ("active --labels", "file", lambda w, f, p, c: ["active", base(w, f), "--labels", p])]
    keys = [("data.path", "file"), ("data.train", "file"), ("data.validation", "file"), ("data.test", "file"),
            ("data.unlabelled", "file"), ("data.extra_tests.x", "file"), ("model.teacher.name", "folder"),
            ("model.student.name", "folder"), ("distill.extra_teachers[0].name", "folder"),
            ("distill.cache_dir", "output folder"), ("run.output_dir", "output folder")]
    for key, kind in keys:
        out.append((key, kind, lambda w, f, p, c, key=key: [c, config_with(w, f, key, p)]))
    return out


def path_cases(rng: random.Random) -> list[Case]:
    cases = []
    for argument, kind, argv in path_arguments():
        for what, sentence in PATH_KINDS[kind]:
            command = rng.choice([c for c in COMMANDS_READING_CONFIG if c not in REFUSE_THE_KEY.get(argument, ())])
            suffix = ".yaml" if argument.endswith(("CONFIG", "--config")) else ".json" if argument == "data.path" \
                else ".csv"

            def build(world: World, folder: Path, argv=argv, what=what, command=command, suffix=suffix) -> list[str]:
                return argv(world, folder, make_path(folder / f"given{suffix}", what), command)
            cases.append(Case(f"path: {kind}", f"{argument} given a {what}" + (
                f" ({command})" if argument.startswith(("CONFIG", "data.", "model.", "distill.", "run.")) else ""),
                build, f"given{suffix}' {sentence}"))
    return cases


def generate() -> list[Case]:
    rng = random.Random(SEED)
    cases = (config_value_cases(rng) + config_file_cases(rng) + set_cases(rng) + data_cases(rng)
             + saved_model_cases(rng) + run_folder_cases(rng) + path_cases(rng))
    return cases


CASES = generate()


# ------------------------------------------------------------------ the world the cases damage copies of

def saved_kinds(tiny_bert: str, root: Path) -> dict[str, Path]:
    """A saved model folder of every student kind, for the intents' labels (untrained: only reading them back
    matters; a teacher used as it is, an LLM or a predictions file, is never saved)."""
    import torch

    from kdflow.config import MODEL_SPECS
    from kdflow.data import ImagePreprocess
    from kdflow.models import KINDS, BuildContext, load_hf_classifier, load_tokenizer, save_model
    torch.manual_seed(0)
    teacher, tok = load_hf_classifier(tiny_bert, LABELS, "classification"), load_tokenizer(tiny_bert)
    out = {}
    for name, kind in [(n, k) for n, k in KINDS.items() if not k.fixed]:
        spec = MODEL_SPECS[name].model_validate(kind.tiny)
        reads = ImagePreprocess([0.5], [0.25], channels=1) if spec.modality == "image" else tok
        model, s_tok = kind.student(spec, BuildContext(LABELS, "classification", 16, reads, teacher,
                                                       lambda: [1, 0]))
        save_model(model, root / name, s_tok, LABELS)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert, intents_json) -> World:
    from kdflow import api
    root = tmp_path_factory.mktemp("fuzz")
    w = World(tiny_bert, intents_json, root / "runs" / "fz", {})
    raw = base_raw(w, root)
    api.teach(raw)
    api.distill(raw)
    shutil.rmtree(w.run / "tensorboard")  # what no case reads: smaller copies; of the checkpoints only the
    for f in (w.run / "checkpoints").rglob("*"):  # trainer states stay (a --resume finds a checkpoint to resume)
        if f.is_file() and f.name != "trainer_state.json":
            f.unlink()
    w.kinds = saved_kinds(tiny_bert, root / "kinds")
    w.unchanged = stamps(w)
    return w


def stamps(world: World) -> dict:
    """Every file of the trained run and the saved models: size and modification time (cheap enough to compare
    after every case, so a case that changed them is named, whatever order the cases run in)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in (world.run, *world.kinds.values())
            for p in sorted(root.rglob("*"))}


def test_the_cases_are_many_and_cover_every_category():
    counts: dict[str, int] = {}
    for case in CASES:
        counts[case.category] = counts.get(case.category, 0) + 1
    assert len(CASES) >= 200, len(CASES)
    assert len({(c.category, c.name) for c in CASES}) == len(CASES)  # no case twice
    assert {c.split(":")[0] for c in counts} == {"config", "data", "saved model", "run folder", "path"}
    assert min(counts.values()) >= 2, counts
    assert len(generate()) == len(CASES) and [c.name for c in generate()] == [c.name for c in CASES]  # seeded


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category}|{c.name}" for c in CASES])
def test_malformed_input_is_refused_in_one_line_and_changes_nothing(case, world, tmp_path, capsys):
    argv = case.build(world, tmp_path)
    before = tree_hash(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, code, err, out[-2000:])
    assert len(lines) == 1 and lines[0].startswith("kdflow: error: "), err
    assert "Traceback" not in err and 'File "' not in err, err
    assert case.expect in lines[0], (case.expect, lines[0])
    assert tree_hash(tmp_path) == before, "the refused command changed the files it was given"
    assert stamps(world) == world.unchanged, "the case changed the trained run or a saved model it copies from"
