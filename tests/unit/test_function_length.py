"""No function or method in the product, the dev platform or the benchmarks is over 60 lines.

House style (ARCHITECTURE.md §4): a function that grows past a screen does more than one thing and
is split by responsibility. Length counts from the `def` line to the last line of the body,
docstring included, decorators not.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (REPO / "aiinfn_hub", REPO / "devplatform" / "aiinfn_dev", REPO / "benchmarks")
MAX_LINES = 60


def long_functions(path: Path, root: Path = REPO, limit: int = MAX_LINES) -> list[str]:
    """`path:line name (n lines)` for each function or method in `path` longer than `limit`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_length_counts_from_def_to_last_line_without_decorators(tmp_path):
    def body(indent: str, lines: int) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(lines))

    source = (
        "@staticmethod\ndef fits():\n"
        + body("    ", 59)
        + "class C:\n    async def too_long(self):\n"
        + body("        ", 60)
    )
    (tmp_path / "m.py").write_text(source)
    assert long_functions(tmp_path / "m.py", root=tmp_path) == ["m.py:63 too_long (61 lines)"]


def test_no_function_longer_than_60_lines():
    offenders = [
        line
        for package in PACKAGES
        for path in sorted(package.rglob("*.py"))
        for line in long_functions(path)
    ]
    assert not offenders, "functions longer than 60 lines:\n" + "\n".join(offenders)
