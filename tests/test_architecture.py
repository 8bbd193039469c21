"""The shape of the package, checked so it stays: imports follow the README's map and make no circle, no
module reaches into another's private names, files and functions stay short, and no function takes a long
list of parameters.

Exceptions are listed here by name with the reason; a new one is a decision, not an accident.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "kdflow"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 50
MAX_PARAMETERS = 8
# "path:function" -> why splitting it would read worse (none today)
LONG_FUNCTIONS: dict[str, str] = {}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path)), path


def _module_name(rel: str) -> str:
    return "kdflow." + rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _resolve(rel: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from."""
    if node.level == 0:
        return node.module or ""
    package = _module_name(rel).split(".")
    if not rel.endswith("__init__.py"):
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_module_imports_another_modules_private_names():
    offences = []
    for rel, tree, _ in modules():
        me = _module_name(rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(rel, node)
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and source != me:
                        offences.append(f"{rel}: from {source} import {alias.name}")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                # module._name (a name bound by 'import x' / 'from . import x'); self._x and obj._x are fine
                if isinstance(base, ast.Name) and base.id in _imported_modules(tree):
                    offences.append(f"{rel}: {base.id}.{node.attr}")
    assert not offences, "private names used across modules:\n" + "\n".join(offences)


def _imported_modules(tree) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("kdflow"))
        elif isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("kdflow")):
            names.update(a.asname or a.name for a in node.names)
    return names


def test_files_and_functions_stay_short():
    long_files, long_functions, many_parameters = [], [], []
    for rel, tree, path in modules():
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            long_files.append(f"{rel}: {lines} lines")
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            key = f"{rel}:{node.name}"
            size = node.end_lineno - node.lineno + 1
            if size > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                long_functions.append(f"{key}: {size} lines")
            params = [a for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                      if a.arg not in ("self", "cls")]
            if len(params) > MAX_PARAMETERS:
                many_parameters.append(f"{key}: {len(params)} parameters")
    assert not long_files, long_files
    assert not long_functions, long_functions
    assert not many_parameters, many_parameters


# ------------------------------------------------------------------ the import graph

def _submodule_or_package(source: str, name: str, known: set) -> str:
    candidate = f"{source}.{name}"
    return candidate if candidate in known else source


def import_graph() -> dict[str, set]:
    """Module -> the kdflow modules it imports, wherever the import stands (top level, inside a function,
    under TYPE_CHECKING): ``from .data import Split`` reads the package ``kdflow.data`` (its ``__init__``
    imports its modules), ``from .data import splits`` the module."""
    trees = {_module_name(rel): (rel, tree) for rel, tree, _ in modules()}
    known = set(trees)
    graph: dict[str, set] = {name: set() for name in known}
    for me, (rel, tree) in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(rel, node)
                if source.split(".")[0] == "kdflow":
                    graph[me].update(_submodule_or_package(source, a.name, known) for a in node.names)
            elif isinstance(node, ast.Import):
                graph[me].update(a.name for a in node.names if a.name.split(".")[0] == "kdflow")
        graph[me] = {m for m in graph[me] if m in known and m != me}
    return graph


def cycles(graph: dict[str, set]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return found


def test_cycles_finds_a_circle_and_nothing_else():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import circles (function-level and TYPE_CHECKING imports counted):\n" + "\n".join(
        " <-> ".join(c) for c in found)


# ------------------------------------------------------------------ private names, any object

# another library's private name kdflow must touch, "file: expression" -> why there is no public way
FOREIGN_PRIVATE = {
    "src/kdflow/engine/train.py: AcceleratorState._reset_state": "accelerate keeps one state per process and has no public "
    "reset; teach then distill in one Python session need other precisions",
    "tests/test_hf_trainer.py: t._remove_unused_columns": "the Trainer's own column filter, reused so the test's "
    "loader feeds exactly what the Trainer's would",
    "tests/test_layer_losses.py: teacher[2]._forward_hooks": "torch lists a module's hooks nowhere public; the "
    "test proves the taps removed theirs",
    "tests/test_vision.py: m._forward_hooks": "as above, for CNN stages",
}


def _privates_defined(tree) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_private_name_read_from_another_module():
    """``x._name`` only where this file defines ``_name`` (its own class or helper) or ``x`` is self / cls: every
    other module, tests included, goes through public names."""
    root = PACKAGE.parents[1]
    offences = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        own = _privates_defined(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            if (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) or node.attr in own:
                continue
            key = f"{path.relative_to(root).as_posix()}: {ast.unparse(node)}"
            if key not in FOREIGN_PRIVATE:
                offences.append(f"{key} (line {node.lineno})")
    assert not offences, "private names read across modules:\n" + "\n".join(sorted(set(offences)))


# ------------------------------------------------------------------ the README's map

def readme_map(text: str) -> list[dict]:
    """The rows of the code block in the README's "Architecture" section, top first: each row's ``names``
    (``x.py`` or ``x/`` before its description) and its ``text`` (continuation lines included)."""
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    rows: list[dict] = []
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        if line[0] != " ":
            rows.append({"names": line.split("  ")[0].split(), "text": line})
        else:
            rows[-1]["text"] += " " + line
    return rows


def layer_of(rows: list[dict]):
    """``module name -> row index`` of the map's rows (a top-level file by its name, a package's modules by
    the package's row); ``None`` for a module the map does not place."""
    where = {}
    for i, row in enumerate(rows):
        for name in row["names"]:
            where["kdflow" if name == "__init__.py" else "kdflow." + name.removesuffix(".py").removesuffix("/")] = i

    def find(module: str):
        module = "kdflow" if module == "kdflow.__init__" else module
        parts = module.split(".")
        for n in range(len(parts), 1, -1):  # the package's own row holds only its __init__
            if ".".join(parts[:n]) in where:
                return where[".".join(parts[:n])]
        return where.get(module)
    return find


def test_the_readme_map_names_every_module():
    rows = readme_map((ROOT / "README.md").read_text())
    find, missing = layer_of(rows), []
    for rel, _, path in modules():
        row = find(_module_name(rel))
        if row is None:
            missing.append(f"{rel}: on no row")
        elif "/" in rel and path.stem != "__init__" and not re.search(rf"\b{path.stem}\b", rows[row]["text"]):
            missing.append(f"{rel}: its package's row does not name {path.stem}")
    assert not missing, "the README's map (Architecture) misses:\n" + "\n".join(missing)


def test_imports_go_down_the_readme_map_only():
    """A module imports from its own row of the map and the rows above it, never from a row below."""
    rows = readme_map((ROOT / "README.md").read_text())
    find, upward = layer_of(rows), []
    for module, targets in import_graph().items():
        for target in sorted(targets):
            if find(target) is not None and find(module) is not None and find(target) > find(module):
                upward.append(f"{module} (row {find(module)}: {' '.join(rows[find(module)]['names'])}) imports "
                              f"{target} (row {find(target)}: {' '.join(rows[find(target)]['names'])})")
    assert not upward, "imports against the README's map:\n" + "\n".join(upward)


def test_the_map_reader_places_modules_and_finds_upward_imports():
    rows = readme_map("## Architecture\n\n```\nerrors.py  one\ntasks/  kinds: kind, regression\n"
                      "cli.py __init__.py\n          interfaces\n```\n## Next\n")
    assert [r["names"] for r in rows] == [["errors.py"], ["tasks/"], ["cli.py", "__init__.py"]]
    find = layer_of(rows)
    assert (find("kdflow.errors"), find("kdflow.tasks.regression"), find("kdflow.__init__"), find("kdflow.cli"),
            find("kdflow.data.load")) == (0, 1, 2, 2, None)
    assert "interfaces" in rows[2]["text"]
