"""Which room of the package imports which, read from the code with `ast`: the drawing on docs/layout.md.

A room is a stage sub-package (`jbert.core`, ..., `jbert.export`) or, inside `jbert.serve`, one of its
three rooms (`serve.runtime`, `serve.http`, `serve.scoring`) and the command line (`serve.cli`) that
sees both. `room_imports` gives the arrows (module-level and function-level imports alike);
`draw_rooms` turns them into a PNG. tests/test_layout.py checks the same arrows against the house
plan, so the picture and the rules come from one reading of the code.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

# Where each room sits in the drawing: (column, row). The trunk runs left to right in the order data
# moves; serve branches off below it.
ROOM_POSITIONS = {
    "core": (0, 1), "tokenization": (1, 1), "data": (2, 1), "train": (3, 1), "export": (4, 1),
    "serve.runtime": (1.5, 0), "serve.http": (3, 0), "serve.scoring": (3, -1), "serve.cli": (4.5, -0.5),
}


def room_of(module: str) -> str | None:
    """The room of a dotted jbert module name (`jbert.serve.http.app` -> `serve.http`), None for `jbert` itself."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "jbert":
        return None
    if parts[1] == "serve" and len(parts) > 2:
        return f"serve.{parts[2]}"
    return parts[1]


def imported_modules(path: Path, module_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, dotted module) of every jbert import in a file (function-level ones too unless told).

    A relative import is an error (ValueError naming the line): the house plan's rules are written
    for absolute `from jbert.stage.module import ...` lines.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # `if TYPE_CHECKING:` blocks never run; everything else at top level does
        nodes = [n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
        nodes = [child for n in nodes for child in ([n] if not isinstance(n, (ast.If, ast.Try)) else ast.walk(n))]
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level:
            raise ValueError(f"{path}:{node.lineno}: use absolute imports (from jbert.stage.module import ...)")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jbert"):
            if node.module == "jbert" or node.module.count(".") == 1:
                # `from jbert.core import readers` names a module; `from jbert.core import X` a name.
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("jbert")]
    return found


def room_imports(package_dir: Path) -> dict[str, set[str]]:
    """room -> the other rooms its modules import, for every module under `package_dir` (the jbert folder)."""
    arrows: dict[str, set[str]] = {}
    root = package_dir.parent
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        source = room_of(module) if module != "jbert.serve" else None
        if source is None:
            continue
        targets = arrows.setdefault(source, set())
        for _, imported in imported_modules(path):
            target = room_of(imported)
            if target and target != source and not (target == "serve" and source.startswith("serve.")):
                targets.add(target)
    return arrows


def draw_rooms(arrows: dict[str, set[str]]) -> bytes:
    """A PNG of the rooms as boxes and their imports as arrows (from importer to imported)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 3.8), dpi=100)
    axes.set_xlim(-0.6, 5.2)
    axes.set_ylim(-1.5, 1.5)
    axes.axis("off")
    for source, targets in arrows.items():
        for target in sorted(targets):
            if source in ROOM_POSITIONS and target in ROOM_POSITIONS:
                axes.annotate("", xy=ROOM_POSITIONS[target], xytext=ROOM_POSITIONS[source],
                              arrowprops=dict(arrowstyle="-|>", color="#7f8c8d", shrinkA=22, shrinkB=22, lw=1,
                                              connectionstyle="arc3,rad=0.12"))
    for room, (x, y) in ROOM_POSITIONS.items():
        colour = "#fdebd0" if room.startswith("serve") else "#d6eaf8"
        axes.text(x, y, room.replace("serve.", "serve/\n"), ha="center", va="center", fontsize=9,
                  bbox=dict(boxstyle="round,pad=0.5", facecolor=colour, edgecolor="#555555"))
    axes.set_title("jbert's rooms: an arrow points from a room to one it imports (drawn from the code)", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
