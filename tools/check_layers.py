"""The import contracts of certwright's layers (DESIGN.md, "Layers"), checked in
``make lint`` and by tests/ca/test_layers.py.

Reads every module's imports with ``ast`` (imports under ``if TYPE_CHECKING:`` are
annotations, not dependencies, and are skipped) and reports each import that breaks a
contract:

- layers, bottom to top: the base (errors, clock, configbase, model, pki, asgi,
  registry, clioptions), store, ca, the front-ends, server, the command line; a module imports
  only from its own layer or below;
- a front-end imports no other front-end, and neither the store nor sqlalchemy: its
  storage reaches it through ``CertificateAuthority.repository``;
- the agent imports only the base and itself (and ``clioptions``): never the server
  side;
- nothing outside ``ca/`` reaches past the core into its parts: no ``ca.store`` or
  ``ca.authority`` (on a name ``ca``/``core`` or an attribute ``.ca``/``.core``);
- ``ca/`` and ``server/`` name no protocol: a protocol's name appears in their code
  (identifiers and strings, not comments) only through the registry.

Usage: python tools/check_layers.py [SRC_DIR]   (exit 1 and one line per violation)
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import sys
import tokenize
from pathlib import Path

PACKAGE = "certwright"
BASE = ("errors", "clock", "configbase", "model", "pki", "asgi", "registry", "clioptions")
FRONTENDS = ("acme", "est", "monitor")
LAYERS: tuple[tuple[str, ...], ...] = (
    BASE,
    ("store",),
    ("ca",),
    FRONTENDS,
    ("server",),
    ("cli", "commands"),
)
AGENT_MAY_IMPORT = (*BASE, "agent", "__init__")
NEUTRAL = ("ca", "server")  # name no protocol
PROTOCOL_NAME = re.compile(r"(?i)(?<![a-z])(acme|est|scep|cmp)(?![a-z])")


@dataclasses.dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _part(module: str) -> str | None:
    """The top-level part of ``certwright.x.y`` (``x``), or None for another package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(part: str) -> int | None:
    return next((i for i, names in enumerate(LAYERS) if part in names), None)


def _imports(tree: ast.Module, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every runtime import of a module."""
    type_checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_checking.update(id(n) for child in node.body for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # "from certwright import store" imports the subpackage
            if name == PACKAGE:  # a subpackage, not a name such as __version__
                found += [(node.lineno, f"{PACKAGE}.{a.name}") for a in node.names
                          if not a.name.startswith("__")]
    return found


PRIVATE_TO_CORE = ("store", "authority")
CORE_NAMES = ("ca", "core")


def _reaches_past_core(tree: ast.Module) -> list[tuple[int, str]]:
    """``ca.store``/``self.core.authority``...: the core's parts used from outside."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_TO_CORE:
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else (
                owner.attr if isinstance(owner, ast.Attribute) else None)
            if name in CORE_NAMES:
                found.append((node.lineno, f"{ast.unparse(node)}"))
    return found


def _protocol_names(source: str) -> list[tuple[int, str]]:
    """Protocol names in identifiers and string literals (not comments, not docstrings)."""
    found = []
    previous = tokenize.NEWLINE
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        kind = tok.type
        if kind == tokenize.NAME or (kind == tokenize.STRING and previous not in (
                tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT)):
            for match in PROTOCOL_NAME.finditer(tok.string):
                found.append((tok.start[0], match.group(1)))
        if kind not in (tokenize.COMMENT, tokenize.NL):
            previous = kind
    return found


def check(src: Path) -> list[Violation]:
    root = src / PACKAGE
    violations: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(src)
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        part = _part(module)
        if part is None or "migrations" in rel.parts:
            continue
        source = path.read_text()
        tree = ast.parse(source, str(path))
        for line, name in _imports(tree, module):
            target = _part(name)
            if part in FRONTENDS and (name.split(".")[0] == "sqlalchemy" or target == "store"):
                violations.append(Violation(rel, line, f"front-end {part} imports {name}: "
                                            "its storage comes through the core"))
            if target is None or target == part:
                continue
            if part == "agent":
                if target not in AGENT_MAY_IMPORT:
                    violations.append(Violation(rel, line, f"the agent imports {name}"))
                continue
            if part in FRONTENDS and target in FRONTENDS:
                violations.append(Violation(rel, line, f"front-end {part} imports front-end "
                                            f"{target} ({name})"))
                continue
            mine, theirs = _layer(part), _layer(target)
            if target == "agent" and part not in ("cli",):
                violations.append(Violation(rel, line, f"{part} imports the agent ({name})"))
            elif mine is not None and theirs is not None and theirs > mine:
                violations.append(Violation(rel, line, f"{part} (layer {mine}) imports {name} "
                                            f"(layer {theirs}): imports run downward only"))
        if part not in ("ca", "store"):
            for line, expr in _reaches_past_core(tree):
                violations.append(Violation(rel, line, f"{expr}: {part} reaches past the core "
                                            "into its parts; ask CertificateAuthority"))
        if part in NEUTRAL:
            for line, word in _protocol_names(source):
                violations.append(Violation(rel, line, f"{part}/ names the protocol "
                                            f"{word!r}: only the registry and the front-end "
                                            "itself may"))
    return violations


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "src"
    violations = check(src)
    for v in violations:
        print(v)
    if violations:
        print(f"{len(violations)} import contract violation(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
