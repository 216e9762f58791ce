"""docs/encoders.md's support matrix names a test for every cell: each named test must exist.

A renamed or deleted test would otherwise leave a cell claiming a proof that no longer runs.
"""

from __future__ import annotations

import ast
import re

from conftest import FULL_PATH_FAMILIES, REPO_ROOT

PAGE = REPO_ROOT / "docs" / "encoders.md"
NAMED_TEST = re.compile(r"`(?P<file>test_[a-z0-9_]+\.py)::(?P<test>test_[a-z0-9_]+)`")
STAGES = ["train", "`--task mlm`", "export fp32", "optimise O1-O3", "int8", "serving tokenizer", "HTTP", "Ray"]


def _test_functions(file_name: str) -> set[str]:
    tree = ast.parse((REPO_ROOT / "tests" / file_name).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_test_the_support_matrix_names_exists():
    text = PAGE.read_text(encoding="utf-8")
    named = NAMED_TEST.findall(text)
    assert len(named) > 20
    missing = [f"{file}::{test}" for file, test in named
               if not (REPO_ROOT / "tests" / file).is_file() or test not in _test_functions(file)]
    assert not missing, f"docs/encoders.md names tests that do not exist: {missing}"


def test_the_matrix_has_a_cell_for_every_stage_of_every_family():
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    header = next(line for line in lines if line.startswith("| family"))
    assert [cell.strip() for cell in header.strip("|").split("|")][1:] == STAGES
    rows = [line for line in lines[lines.index(header) + 2:] if line.startswith("|")]
    families = [row.split("|")[1].strip() for row in rows[:6]]
    assert [f.split("(`")[-1].rstrip("`)") for f in families] == ["bert", "modernbert", "deberta-v2", "xlm-roberta", "roberta", "electra"]
    for row in rows[:6]:
        cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
        assert len(cells) == len(STAGES) and all(cells), row
        # A cell either names a test or says plainly that there is none.
        assert all(NAMED_TEST.search(cell) or cell.startswith("not tested") for cell in cells), row


def test_resume_and_multi_process_are_named_for_every_full_path_family():
    """The paragraph under the matrix names the resume and the 2-process test, and the families they run."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("**Resume and multi-process**")
    paragraph = text[start:text.index("\n\n", start)]
    named = {f"{file}::{test}" for file, test in NAMED_TEST.findall(paragraph)}
    assert {"test_encoders_resume.py::test_interrupted_and_resumed_run_equals_uninterrupted",
            "test_encoders_resume.py::test_two_processes_equal_one_process"} <= named
    assert FULL_PATH_FAMILIES == ["modernbert", "deberta-v2", "xlm-roberta"]
    for family in ("ModernBERT", "DeBERTa-v3", "XLM-R"):
        assert family in paragraph, family
