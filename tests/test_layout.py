"""The package layout is the data flow: stage sub-packages, one-way dependencies, torch-free serving.

These tests read the code itself (imports parsed with `ast`), so a new module that breaks the
house plan fails here with the offending import named, before a reviewer has to spot it.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "jbert"

# The order data moves through the stages. A stage may import itself and the stages to its left
# in ALLOWED; serve is a branch off the trunk: it sees only core and tokenization.
ALLOWED = {
    "core": {"core"},
    "tokenization": {"core", "tokenization"},
    "data": {"core", "tokenization", "data"},
    "train": {"core", "tokenization", "data", "train"},
    "export": {"core", "tokenization", "data", "train", "serve", "export"},
    "serve": {"core", "tokenization", "serve"},
}
TORCH_FREE_STAGES = ("core", "tokenization", "serve")
# Inside serve, three rooms: http and scoring both run the runtime and never each other; the runtime
# runs neither. Only serve's own door (cli.py, __init__.py) may see every room.
SERVE_ROOMS = {"runtime": {"runtime"}, "http": {"runtime", "http"}, "scoring": {"runtime", "scoring"}}
SERVE_DOOR = {"__init__.py", "cli.py"}
MAX_MODULE_LINES = 400
LONG_MODULE_REASON = "Longer than 400 lines because"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def _load_import_graph():
    """docs/import_graph.py: the one reading of the imports, shared with the drawing on docs/layout.md."""
    spec = importlib.util.spec_from_file_location("jbert_docs_import_graph", REPO_ROOT / "docs" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IMPORT_GRAPH = _load_import_graph()


def _jbert_imports(path: Path, module_level_only: bool) -> list[tuple[int, str]]:
    """(line, imported jbert module) for every import in a file (function-level ones too unless told)."""
    return IMPORT_GRAPH.imported_modules(path, module_level_only)


def test_drawing_shows_serve_as_three_rooms_without_an_arrow_between_http_and_scoring():
    arrows = IMPORT_GRAPH.room_imports(PACKAGE)
    assert {"serve.runtime", "serve.http", "serve.scoring", "serve.cli"} <= set(arrows)
    assert "serve.scoring" not in arrows["serve.http"] and "serve.http" not in arrows["serve.scoring"]
    assert not arrows["serve.runtime"] & {"serve.http", "serve.scoring", "serve.cli"}
    assert {"serve.http", "serve.scoring"} <= arrows["serve.cli"]
    assert set(arrows) <= set(IMPORT_GRAPH.ROOM_POSITIONS), "a new room needs a place in the drawing (docs/import_graph.py)"


def test_every_stage_imports_only_the_stages_before_it():
    problems = []
    for path in _stage_modules():
        stage = path.relative_to(PACKAGE).parts[0]
        assert stage in ALLOWED, f"{path}: sub-package {stage!r} is not in the house plan (tests/test_layout.py)"
        for line, imported in _jbert_imports(path, module_level_only=False):
            parts = imported.split(".")
            if len(parts) > 1 and parts[1] in ALLOWED and parts[1] not in ALLOWED[stage]:
                problems.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {imported} ({stage} may use {sorted(ALLOWED[stage])})")
    assert not problems, "\n".join(problems)


def test_serve_rooms_never_import_each_other():
    serve = PACKAGE / "serve"
    loose = sorted(p.name for p in serve.glob("*.py") if p.name not in SERVE_DOOR)
    assert not loose, f"jbert/serve/ modules outside the rooms {sorted(SERVE_ROOMS)}: {loose}"
    assert sorted(p.name for p in serve.iterdir() if p.is_dir() and (p / "__init__.py").is_file()) == sorted(SERVE_ROOMS)
    problems = []
    for path in sorted(serve.rglob("*.py")):
        parts = path.relative_to(serve).parts
        if len(parts) == 1:
            continue
        room = parts[0]
        for line, imported in _jbert_imports(path, module_level_only=False):
            names = imported.split(".")
            if names[:2] == ["jbert", "serve"] and len(names) > 2 and names[2] not in SERVE_ROOMS[room]:
                problems.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {imported} "
                                f"(serve/{room} may use {sorted(SERVE_ROOMS[room])})")
    assert not problems, "\n".join(problems)


def test_no_module_only_forwards_names():
    """A module (not a package's __init__) holds code of its own, not only imports of names defined elsewhere."""
    forwarding = []
    for path in _stage_modules():
        if path.name == "__init__.py":
            continue
        body = ast.parse(path.read_text(encoding="utf-8")).body
        own = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom))
               and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # the docstring
               and not (isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets))]
        if not own:
            forwarding.append(str(path.relative_to(REPO_ROOT)))
    assert not forwarding, f"modules that only forward names defined elsewhere: {forwarding}"


def test_no_import_cycles_between_modules():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, imported in _jbert_imports(path, module_level_only=False):
            # `from jbert.core import readers` is a module; `from jbert.tokenization import X` its package.
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported != name and not name.startswith(imported + "."):  # a package's own __init__ is no cycle
                targets.add(imported)
        graph[name] = targets
    cycles = []
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_modules_stay_short_or_say_why():
    long_modules = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES and LONG_MODULE_REASON not in text[:3000]:
            long_modules.append(f"{path.relative_to(REPO_ROOT)} ({text.count(chr(10))} lines)")
    assert not long_modules, (
        f"modules over {MAX_MODULE_LINES} lines without '{LONG_MODULE_REASON} ...' in their docstring: {long_modules}"
    )


def test_every_stage_says_what_it_takes_and_hands_on():
    for package in sorted(p.parent for p in PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 3, f"{package.name}/__init__.py needs a docstring describing the stage"


def test_torch_free_stages_import_without_torch_or_transformers():
    """Every module of core, tokenization and serve imports in a fresh interpreter without torch."""
    names = [_module_name(p) for p in _stage_modules() if p.relative_to(PACKAGE).parts[0] in TORCH_FREE_STAGES]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print('LOADED', sorted(m for m in ('torch', 'transformers', 'optimum', 'datasets', 'accelerate') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, f"serving-side modules pulled in heavy packages: {done.stdout}"


def test_no_test_file_imports_another_test_file():
    """Shared helpers live in tests/conftest.py: a test file (or a bench script) importing another test
    file would run that file's module-level code and make pytest's import order matter."""
    tests_dir = REPO_ROOT / "tests"
    helper_modules = {p.stem for p in tests_dir.glob("*.py")} - {"conftest"}
    problems = []
    for path in sorted([*tests_dir.glob("*.py"), *(REPO_ROOT / "bench").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top.startswith("test_") or top in helper_modules:
                    problems.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name} (use tests/conftest.py)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train.py", "--help"], "--model_name_or_path"),
        (["export.py", "--help"], "--min_agreement"),
        (["serve_onnx.py", "--help"], "score"),
        (["serve_onnx.py", "score", "--help"], "EXPORT_DIR"),
        (["serve_onnx.py", "http", "--help"], "--port"),
        # the console scripts' modules run as `python -m` too (`accelerate launch -m jbert.train.cli`)
        (["-m", "jbert.train.cli", "--help"], "--model_name_or_path"),
        (["-m", "jbert.export.cli", "--help"], "--min_agreement"),
        (["-m", "jbert.serve.cli", "score", "--help"], "EXPORT_DIR"),
    ],
)
def test_each_cli_answers_help(argv, expected):
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
