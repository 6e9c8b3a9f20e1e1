"""The architecture's arrows, checked on the source: every ``import`` and ``from`` statement
of the project, read with ``ast`` (imports inside functions included), followed transitively.

* No product module (worker, workflows, activities, providers, starter, core, codec,
  telemetry, and ``cli`` and ``api`` where they exist) reaches the simulators or the dev
  harness (``devstack``). The command line may import them inside a function, for its dev
  commands only; imports under ``if TYPE_CHECKING:`` never run and do not count here.
* ``core`` imports nothing of the project but ``core`` (type-only imports included).
* What the workflow modules import at module level (their top-level imports and those passed
  through the sandbox with ``workflow.unsafe.imports_passed_through()``) never reaches
  ``codec`` or ``cryptography``.

Importing ``a.b`` runs ``a/__init__.py`` too, so parent packages are edges as well. The
checker is tested on small made-up trees first, so a violation is known to fail the test.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("core", "providers", "workflows", "activities", "starter", "codec", "telemetry")
PRODUCT_OPTIONAL = ("cli", "api")
PRODUCT_MODULES = ("worker",)
DEV_HARNESS = frozenset({"simulators", "devstack"})
# May import the dev harness inside functions (its dev commands).
DEV_COMMANDS = frozenset({"cli"})
WORKFLOW_MODULES = ("workflows.refund", "workflows.payment_lane", "workflows.status_batch")
SANDBOX_FORBIDDEN = frozenset({"codec", "cryptography"})
SKIPPED_DIRS = frozenset({".venv", "build", "dist", "node_modules", "__pycache__"})


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool
    type_only: bool
    passed_through: bool

    def where(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _parents_and_self(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


class Project:
    """Every module under the root's top-level packages (and top-level ``.py`` files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, Path] = {}
        for entry in sorted(root.iterdir()):
            if entry.is_file() and entry.suffix == ".py":
                self.files[entry.stem] = entry
            elif (
                entry.is_dir()
                and entry.name not in SKIPPED_DIRS
                and (entry / "__init__.py").is_file()
            ):
                for path in sorted(entry.rglob("*.py")):
                    if SKIPPED_DIRS.isdisjoint(path.relative_to(root).parts):
                        self.files[self._name(path)] = path
        self.packages = frozenset(_top(m) for m in self.files)
        self.imports = {m: list(self._read(m, path)) for m, path in self.files.items()}

    def _name(self, path: Path) -> str:
        parts = list(path.relative_to(self.root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)

    def _read(self, module: str, path: Path) -> Iterator[Import]:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        yield from _ImportVisitor(self, module, package).run(tree)

    def resolve(self, base: str, names: Iterable[str]) -> list[str]:
        """Targets of ``from base import names``: a name that is a module is one itself."""
        if not base:
            return list(names)
        return [base, *(f"{base}.{n}" for n in names if f"{base}.{n}" in self.files)]

    def is_project(self, module: str) -> bool:
        return _top(module) in self.packages

    def product(self) -> list[str]:
        tops = set(PRODUCT) | {p for p in PRODUCT_OPTIONAL if p in self.packages}
        return sorted(m for m in self.files if _top(m) in tops or m in PRODUCT_MODULES)

    def runs(self, imp: Import) -> list[str]:
        """The project modules an import executes: the target and its parent packages."""
        return [m for m in _parents_and_self(imp.target) if m in self.files]


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, project: Project, module: str, package: str) -> None:
        self.project = project
        self.module = module
        self.package = package
        self.in_function = 0
        self.type_only = 0
        self.passed_through = 0
        self.found: list[Import] = []

    def run(self, tree: ast.AST) -> list[Import]:
        self.visit(tree)
        return self.found

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append(
            Import(
                source=self.module,
                target=target,
                line=node.lineno,
                in_function=self.in_function > 0,
                type_only=self.type_only > 0,
                passed_through=self.passed_through > 0,
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".") if self.package else []
            if node.level > 1:
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        for target in self.project.resolve(base, (a.name for a in node.names)):
            self._add(target, node)

    def _inside_function(self, node: ast.AST) -> None:
        self.in_function += 1
        self.generic_visit(node)
        self.in_function -= 1

    visit_FunctionDef = _inside_function
    visit_AsyncFunctionDef = _inside_function
    visit_Lambda = _inside_function

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            self.type_only += 1
            for child in node.body:
                self.visit(child)
            self.type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_With(self, node: ast.With) -> None:
        passes = any("imports_passed_through" in ast.unparse(i.context_expr) for i in node.items)
        self.passed_through += passes
        self.generic_visit(node)
        self.passed_through -= passes


# ------------------------------------------------------------------------------- the rules


def _reach(
    project: Project,
    starts: Iterable[Import],
    follow: Iterable[str] = (),
    *,
    stop: frozenset[str],
    exempt: frozenset[str] = frozenset(),
) -> list[str]:
    """Chains from the starting imports (and every import of the ``follow`` modules) to a
    module or external package whose top-level name is in ``stop``. Runtime imports only;
    function-level imports from an ``exempt`` package into ``stop`` do not count."""

    def allowed(imp: Import) -> bool:
        if imp.type_only:
            return False
        return not (imp.in_function and _top(imp.source) in exempt and _top(imp.target) in stop)

    queue: deque[tuple[Import, tuple[str, ...]]] = deque()
    for imp in starts:
        if allowed(imp):
            queue.append((imp, (imp.where(),)))
    for module in follow:
        queue.extend((imp, (imp.where(),)) for imp in project.imports[module] if allowed(imp))
    seen: set[str] = set()
    found: list[str] = []
    while queue:
        imp, chain = queue.popleft()
        if _top(imp.target) in stop:
            found.append(" -> ".join(chain))
            continue
        for module in project.runs(imp):
            if module in seen:
                continue
            seen.add(module)
            for nxt in project.imports[module]:
                if allowed(nxt):
                    queue.append((nxt, (*chain, nxt.where())))
    return found


def dev_harness_violations(project: Project) -> list[str]:
    """Product modules that reach the simulators or the dev harness."""
    found: list[str] = []
    for module in project.product():
        found.extend(_reach(project, (), (module,), stop=DEV_HARNESS, exempt=DEV_COMMANDS))
    return sorted(set(found))


def core_violations(project: Project) -> list[str]:
    """Imports of ``core`` modules that reach another project package."""
    return sorted(
        imp.where()
        for module, imports in project.imports.items()
        if _top(module) == "core"
        for imp in imports
        if project.is_project(imp.target) and _top(imp.target) != "core"
    )


def sandbox_violations(project: Project) -> list[str]:
    """Module-level imports of the workflow modules that reach the codec or cryptography."""
    starts = [
        imp
        for module in WORKFLOW_MODULES
        if module in project.imports
        for imp in project.imports[module]
        if not imp.in_function
    ]
    return _reach(project, starts, stop=SANDBOX_FORBIDDEN)


# -------------------------------------------------------------------- the checker, checked


def _tree(root: Path, files: dict[str, str]) -> Project:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in {p.parent for p in root.rglob("*.py")}:
        if directory != root:
            (directory / "__init__.py").touch()
    return Project(root)


CLEAN = {
    "core/models.py": "import json\nfrom pydantic import BaseModel\n",
    "core/money.py": "from .models import BaseModel\n",
    "activities/acts.py": "from core.models import BaseModel\n",
    "workflows/wf.py": (
        "from temporalio import workflow\n"
        "with workflow.unsafe.imports_passed_through():\n"
        "    from activities import acts\n"
    ),
    "workflows/refund.py": "from workflows import wf\n",
    "codec/enc.py": "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n",
    "starter/conn.py": "import codec.enc\n",
    "cli/dev.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from devstack.stack import Stack\n"
        "def dev() -> None:\n"
        "    from devstack.stack import Stack\n"
        "    import simulators.server\n"
    ),
    "devstack/stack.py": "import simulators.server\nStack = object\n",
    "simulators/server.py": "",
    "worker.py": "import starter.conn\nimport workflows.refund\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    project = _tree(tmp_path, CLEAN)
    found = dev_harness_violations(project)
    assert not found, "\n" + "\n".join(found)
    found = core_violations(project)
    assert not found, "\n" + "\n".join(found)
    found = sandbox_violations(project)
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"providers/p.py": "import simulators.server\n"}, "providers.p:1 imports simulators"),
        # Transitively, through a package's __init__, and inside a function.
        (
            {
                "activities/__init__.py": "from activities import bad\n",
                "activities/bad.py": "\ndef f():\n    from devstack import stack\n",
            },
            "activities.bad:3 imports devstack",
        ),
        # A module-level import in the command line is not a dev command.
        ({"cli/main.py": "from devstack.stack import Stack\n"}, "cli.main:1 imports devstack"),
        # Nor is a function-level one in another product package.
        ({"starter/s.py": "def f():\n    import devstack\n"}, "starter.s:2 imports devstack"),
    ],
)
def test_a_product_module_reaching_the_dev_harness_fails(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    found = dev_harness_violations(_tree(tmp_path, {**CLEAN, **files}))
    assert any(expected in chain for chain in found), found


@pytest.mark.parametrize(
    "text",
    [
        "from activities.acts import BaseModel\n",
        "def f():\n    import telemetry.metrics\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from workflows import wf\n",
        "import workflows.wf as wf\n",
    ],
)
def test_core_importing_the_project_fails(tmp_path: Path, text: str) -> None:
    files = {**CLEAN, "core/extra.py": text, "telemetry/metrics.py": ""}
    assert core_violations(_tree(tmp_path, files)) != []


@pytest.mark.parametrize(
    ("module", "text"),
    [
        ("activities/acts.py", "import codec.enc\n"),
        ("activities/acts.py", "def f():\n    from starter import conn\n"),
        ("workflows/wf.py", "import cryptography\n"),
        ("activities/__init__.py", "import starter.conn\n"),
    ],
)
def test_the_workflow_modules_reaching_the_codec_fails(
    tmp_path: Path, module: str, text: str
) -> None:
    files = {**CLEAN, module: CLEAN.get(module, "") + text}
    found = sandbox_violations(_tree(tmp_path, files))
    assert found
    assert all(chain.startswith("workflows.") for chain in found)


# ------------------------------------------------------------------------ the project itself


@pytest.fixture(scope="module")
def project() -> Project:
    return Project(ROOT)


def test_the_project_is_read(project: Project) -> None:
    product = project.product()
    for module in ("worker", "core.models", *WORKFLOW_MODULES, "activities.lane_activities"):
        assert module in product
    assert all(_top(m) not in DEV_HARNESS for m in product)
    assert any(imp.passed_through for imp in project.imports["workflows.refund"])


def test_no_product_module_reaches_the_simulators_or_the_dev_harness(project: Project) -> None:
    found = dev_harness_violations(project)
    assert not found, "\n" + "\n".join(found)


def test_core_imports_nothing_of_the_project(project: Project) -> None:
    found = core_violations(project)
    assert not found, "\n" + "\n".join(found)


def test_the_workflow_modules_pass_through_neither_codec_nor_cryptography(
    project: Project,
) -> None:
    found = sandbox_violations(project)
    assert not found, "\n" + "\n".join(found)


def test_loading_the_workflow_modules_loads_neither_codec_nor_cryptography() -> None:
    """The same at run time, third-party packages included: what importing the workflow
    modules loads is what the sandbox passes through."""
    code = (
        "import sys\n"
        f"for name in {WORKFLOW_MODULES!r}:\n"
        "    __import__(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
    assert loaded & (SANDBOX_FORBIDDEN | DEV_HARNESS) == set()
