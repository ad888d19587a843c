"""Which tests can behave differently under another JupyterHub: the `hub` marker's rule.

A test is `hub` when its function (its class, for a method), or a fixture it uses, reaches
JupyterHub, KubeSpawner or OAuthenticator through the names it uses. The rule reads source, not
sys.modules: every first-party module is parsed (AST) and each module-level name gets the names
its definition uses, lazy imports included. `"-m", "X"` in a command list counts as using module
X run as a program (how the tests start a hub, the demo and the job service); in the product and
the dev platform, a string that is a first-party dotted name ("aiinfn_hub.spawner") counts as
using it (importlib). Names, not whole modules: the pure `UserError` does not drag in its
module's JupyterHub shim, and a pod runner test is not `hub` because another test in its file
starts a hub.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

SEEDS = frozenset({"jupyterhub", "kubespawner", "oauthenticator"})
FIRST_PARTY = ("aiinfn_hub", "aiinfn_dev", "tests")
# Where a dotted name in a string is an import (importlib); in the tests it is data, often for
# another interpreter (the hub image's environment).
IMPORTS_BY_NAME = ("aiinfn_hub", "aiinfn_dev")

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
# ("sym", module, name): a module-level name; ("mod", module): everything in a module;
# ("main", module): `python -m module`.
Node = tuple


def first_party_roots(names: Iterable[str] = FIRST_PARTY) -> dict[str, Path]:
    """Each first-party package's folder, found without importing it. A package not found is an
    error: its names would silently reach nothing."""
    roots = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise LookupError(f"hub marker: package {name!r} is not importable here")
        roots[name] = Path(list(spec.submodule_search_locations)[0])
    return roots


class _Module:
    """One parsed module: what each module-level name uses, and what the module runs."""

    def __init__(self, index: HubIndex, name: str, path: Path) -> None:
        self.index, self.name = index, name
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.bindings: dict[str, set[Node]] = defaultdict(set)
        self.module_aliases: dict[str, str] = {}
        self.side: set[Node] = set()  # statements that bind nothing but run on import
        self.main: set[Node] = set()  # the `if __name__ == "__main__":` block
        units = list(self._units(ast.parse(path.read_text(), str(path)).body))
        self.names = {name for bound, _ in units for name in bound or ()}
        for bound, stmt in units:
            self._add(bound, stmt)

    def _units(self, body: list[ast.stmt]):
        """(names bound, statement) for each module-level statement, inside if/try/with too."""
        for stmt in body:
            if _is_main_guard(stmt):
                yield None, stmt
            elif isinstance(stmt, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "handlers", "finalbody"):
                    for child in getattr(stmt, field, []):
                        yield from self._units(
                            child.body if isinstance(child, ast.ExceptHandler) else [child]
                        )
            else:
                yield _bound_names(stmt), stmt

    def _add(self, bound: list[str] | None, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias, target, module in self._imports(stmt):
                self.bindings[alias].add(target)
                if module:
                    self.module_aliases[alias] = module
            return
        refs = _References(self).refs_of(stmt)
        if bound is None:
            self.main |= refs
        elif not bound:
            self.side |= refs
        for name in bound or ():
            self.bindings[name] |= refs

    def _imports(self, stmt: ast.Import | ast.ImportFrom):
        """(name bound, node it stands for, module name if it is bound to a module)."""
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                module = alias.name if alias.asname else alias.name.partition(".")[0]
                yield alias.asname or module, ("mod", alias.name), module
            return
        source = self._absolute(stmt)
        for alias in stmt.names:
            full = f"{source}.{alias.name}"
            if alias.name == "*":
                yield "*", ("mod", source), None
            elif self.index.is_module(full):
                yield alias.asname or alias.name, ("mod", full), full
            else:
                yield alias.asname or alias.name, ("sym", source, alias.name), None

    def _absolute(self, stmt: ast.ImportFrom) -> str:
        if not stmt.level:
            return stmt.module or ""
        parts = self.package.split(".")
        base = ".".join(parts[: len(parts) - stmt.level + 1])
        return f"{base}.{stmt.module}" if stmt.module else base


class _References(ast.NodeVisitor):
    """The nodes a statement uses: module-level names, attributes of imported modules, lazy
    imports, `-m X` programs and first-party dotted names in strings (importlib's way in)."""

    def __init__(self, module: _Module) -> None:
        self.module, self.refs = module, set()

    def refs_of(self, stmt: ast.stmt) -> set[Node]:
        self.visit(stmt)
        return self.refs

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.module.names:
            self.refs.add(("sym", self.module.name, node.id))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, root = [], node
        while isinstance(root, ast.Attribute):
            chain.insert(0, root.attr)
            root = root.value
        if isinstance(root, ast.Name) and root.id in self.module.module_aliases:
            self.refs.add(self.module.index.resolve(self.module.module_aliases[root.id], chain))
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.refs |= {target for _, target, _ in self.module._imports(node)}

    visit_ImportFrom = visit_Import

    def visit_List(self, node: ast.List | ast.Tuple) -> None:
        values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
        for flag, program in zip(values, values[1:], strict=False):
            if flag == "-m" and isinstance(program, str):
                self.refs.add(("main", program))
        self.generic_visit(node)

    visit_Tuple = visit_List

    def visit_Constant(self, node: ast.Constant) -> None:
        if (
            isinstance(node.value, str)
            and _DOTTED.fullmatch(node.value)
            and self.module.name.partition(".")[0] in self.module.index.imports_by_name
        ):
            top, *chain = node.value.split(".")
            if top in self.module.index.roots:
                self.refs.add(self.module.index.resolve(top, chain))


def _is_main_guard(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.If)
        and isinstance(stmt.test, ast.Compare)
        and isinstance(stmt.test.left, ast.Name)
        and stmt.test.left.id == "__name__"
    )


def _bound_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.partition(".")[0] for a in stmt.names]
    targets = {
        ast.Assign: lambda s: s.targets,
        ast.AnnAssign: lambda s: [s.target],
        ast.AugAssign: lambda s: [s.target],
    }.get(type(stmt), lambda s: [])(stmt)
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


class HubIndex:
    """The static graph of first-party names; `hub(nodes)` says which of them reach a seed."""

    def __init__(
        self, roots: dict[str, Path] | None = None, imports_by_name: Iterable[str] = IMPORTS_BY_NAME
    ) -> None:
        self.roots = first_party_roots() if roots is None else roots
        self.imports_by_name = frozenset(imports_by_name)
        self.module = cache(self._parse)

    def path(self, module: str) -> Path | None:
        top, _, rest = module.partition(".")
        if top not in self.roots:
            return None
        base = self.roots[top].joinpath(*rest.split(".")) if rest else self.roots[top]
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    def is_module(self, module: str) -> bool:
        return self.path(module) is not None

    def resolve(self, module: str, chain: list[str]) -> Node:
        """The node `module.a.b...` stands for: the deepest submodule, then a name in it."""
        for attr in chain:
            if not self.is_module(f"{module}.{attr}"):
                return ("sym", module, attr)
            module = f"{module}.{attr}"
        return ("mod", module)

    def _parse(self, module: str) -> _Module | None:
        path = self.path(module)
        return _Module(self, module, path) if path else None

    def edges(self, node: Node) -> set[Node]:
        kind, module, *name = node
        if kind == "main":
            runs = f"{module}.__main__"
            return {("mod", module)} | ({("mod", runs)} if self.is_module(runs) else set())
        parsed = self.module(module)
        if parsed is None:
            return set()
        if kind == "mod":
            everything = set().union(*parsed.bindings.values())
            return everything | parsed.side | parsed.main
        if name[0] in parsed.bindings:
            return parsed.bindings[name[0]] | parsed.side
        full = f"{module}.{name[0]}"
        star = parsed.bindings.get("*", set())  # `from x import *` may have brought it
        return ({("mod", full)} if self.is_module(full) else set()) | star

    def hub(self, nodes: Iterable[Node]) -> set[Node]:
        """The given nodes that reach JupyterHub, KubeSpawner or OAuthenticator."""
        nodes = set(nodes)
        users: dict[Node, set[Node]] = defaultdict(set)
        seen, todo, reached = set(nodes), list(nodes), []
        while todo:
            node = todo.pop()
            if node[1].partition(".")[0] in SEEDS:
                reached.append(node)
                continue
            for target in self.edges(node):
                users[target].add(node)
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        hub = set(reached)
        while reached:
            for user in users[reached.pop()] - hub:
                hub.add(user)
                reached.append(user)
        return hub & nodes


def _node_of(function) -> Node | None:
    """The module-level name a test or fixture function is defined under."""
    function = inspect.unwrap(function)
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    return ("sym", module, qualname.partition(".")[0]) if module else None


def item_nodes(item: pytest.Item) -> set[Node]:
    """The test's function (its class, for a method) and the fixtures it uses, as nodes."""
    functions = [getattr(item, "function", None)]
    fixtures = getattr(item, "_fixtureinfo", None)
    for definitions in fixtures.name2fixturedefs.values() if fixtures else ():
        functions += [definition.func for definition in definitions]
    return {node for node in map(_node_of, filter(None, functions)) if node}


def hub_items(items: list[pytest.Item], index: HubIndex | None = None) -> list[pytest.Item]:
    """The items the `hub` marker applies to."""
    index = index or HubIndex()
    nodes = {item.nodeid: item_nodes(item) for item in items}
    hub = index.hub(set().union(*nodes.values()))
    return [item for item in items if nodes[item.nodeid] & hub]
