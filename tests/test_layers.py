"""The layering rule that import-linter cannot see: no import between project modules
inside a function unless a comment on that line says why: an optional dependency
(``# optional: ...``) or a command that loads only what it runs (``# lazy: ...``, the
CLI's subcommands). Such imports hid the mixer's import cycle (issue 19); the layers
themselves are checked by ``lint-imports`` (contracts in pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("syncclass", "mixer", "edge_agent", "recorder", "media_server")
CHECKED = ("mixer", "syncclass", "edge_agent", "recorder", "media_server", "benchmarks")
"""Packages whose function-level imports are checked."""
REASONS = ("# optional:", "# lazy:")
"""Comments that say why an import sits inside a function."""


def function_level_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``path:line`` (relative to ``root``) of each import of a project module inside a
    function without an ``# optional: <why>`` or ``# lazy: <why>`` comment."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found: set[int] = set()
    for func in ast.walk(ast.parse(text)):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            project = [n for n in names if n.startswith(".") or n.split(".")[0] in PROJECT]
            if project and not any(r in lines[node.lineno - 1] for r in REASONS):
                found.add(node.lineno)  # a nested function's import is walked twice
    return [f"{path.relative_to(root)}:{n}" for n in sorted(found)]


def test_no_function_level_imports() -> None:
    found = [hit for pkg in CHECKED for path in sorted((ROOT / pkg).rglob("*.py"))
             for hit in function_level_imports(path)]
    assert found == []


def test_the_check_sees_a_function_level_import(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("def f() -> None:\n    from .core import Mixer  # core imports us\n\n\n"
                      "async def g() -> None:\n    import mixer.core  # optional: why\n"
                      "    from syncclass import rtc  # lazy: aiortc\n"
                      "    from aiohttp import web\n",
                      encoding="utf-8")
    assert function_level_imports(module, tmp_path) == ["probe.py:2"]
