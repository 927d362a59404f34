"""The layer rules of docs/architecture.md, enforced on the imports the code really makes.

The rules are read from the document itself (its ``layers`` and ``pure`` blocks), so the
drawing and the code cannot drift apart. Every import counts: top level, inside functions and
under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("voice", "signaling")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module


def _modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            found[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return found


MODULES = _modules()


def _imports(module: Module) -> set[str]:
    """Every module ``module`` imports, resolved to the deepest module that exists here."""
    is_package = module.path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.add(candidate if candidate in MODULES else base)
    return out


def _block(kind: str) -> list[tuple[str, list[str]]]:
    """Rows of a fenced ```text <kind>``` block in docs/architecture.md: (subject, [names])."""
    text = DOC.read_text()
    match = re.search(rf"```text {kind}\n(.*?)```", text, re.S)
    assert match is not None, f"docs/architecture.md has no `text {kind}` block"
    rows = []
    for line in match.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            subject, _, rest = line.partition(":")
            rows.append((subject.strip(), [n for n in rest.split() if n != "-"]))
    return rows


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


LAYERS = _block("layers")
PURE = _block("pure")


def _layer_of(name: str) -> tuple[str, list[str]]:
    matches = [(p, allowed) for p, allowed in LAYERS if _within(name, p)]
    assert matches, f"{name} is in no layer of docs/architecture.md: add it there"
    return max(matches, key=lambda row: len(row[0]))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_imports_only_what_its_layer_allows(name: str) -> None:
    layer, allowed = _layer_of(name)
    wrong = sorted(
        target
        for target in _imports(MODULES[name])
        if target.split(".")[0] in PACKAGES
        and not _within(target, layer)
        and not any(_within(target, a) for a in allowed)
    )
    assert not wrong, f"{name} (layer {layer}) may not import {wrong}"


@pytest.mark.parametrize("subject", [s for s, _ in PURE if s != "banned"])
def test_pure_code_does_no_io(subject: str) -> None:
    banned = dict(PURE)["banned"]
    members = [m for n, m in MODULES.items() if _within(n, subject)]
    assert members, f"no module {subject}"
    for module in members:
        bad = sorted(t for t in _imports(module) if any(_within(t, b) for b in banned))
        assert not bad, f"{module.name} is pure but imports {bad}"
        opens = [
            node.lineno
            for node in ast.walk(module.tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("open", "read_text", "write_text", "read_bytes", "write_bytes")
        ]
        assert not opens, f"{module.name} is pure but opens files (lines {opens})"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting its own submodules is not a cycle between modules.
    graph = {
        name: {t for t in _imports(module) if t in MODULES and not _within(t, name)}
        for name, module in MODULES.items()
    }
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def test_the_rules_would_catch_a_violation() -> None:
    """The checker itself: a forbidden import and a cycle are found in synthetic input."""
    fake = Module("voice.call.fake", ROOT / "voice/call/fake.py", ast.parse("import asyncio"))
    assert "asyncio" in _imports(fake)
    layer, allowed = _layer_of("voice.call.fake")
    assert layer == "voice.call" and not any(_within("voice.phone.call", a) for a in allowed)
    assert any(_within("asyncio", b) for b in dict(PURE)["banned"])
    assert "voice.call" in [s for s, _ in PURE]
    _, crypto_allowed = _layer_of("voice.crypto.envelope")
    assert not any(_within("voice.media.session", a) for a in crypto_allowed)
    _, signaling_allowed = _layer_of("signaling.router")
    assert not any(_within("voice.errors", a) for a in signaling_allowed)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
