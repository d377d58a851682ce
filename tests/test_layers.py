"""The import layers of pyproject.toml's [tool.importlinter]: each floor imports only the floors
below it, only the registry calls the zoo, no module is outside every floor, no import cycle."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
LINT = Path(sys.executable).parent / "lint-imports"


def modules(src: Path, package: str = "retain") -> dict[str, Path]:
    """Module name -> file, for every .py file of `package` under `src`."""
    out = {}
    for f in sorted((src / package).rglob("*.py")):
        parts = f.relative_to(src).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph(src: Path, package: str = "retain") -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (functions too), as written."""
    mods = modules(src, package)
    graph = {}
    for name, f in mods.items():
        here = name if f.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
        graph[name] = set()
        for t in targets:
            while t and t not in mods:  # `import a.b.c` of a package's name: the module a.b
                t = t.rpartition(".")[0]
            if t and t != name:
                graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return [m.strip().strip("()") for layer in layers for m in layer.replace("|", ":").split(":")]


def lint(src: Path) -> subprocess.CompletedProcess:
    if not LINT.exists():
        pytest.fail(f"{LINT} is missing: pip install -e '.[test]' (import-linter)")
    return subprocess.run([str(LINT), "--no-cache", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)}, cwd=src, timeout=300)


def test_every_floor_imports_only_the_floors_below_it():
    res = lint(SRC)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph(SRC)) == []


def test_every_module_stands_on_a_floor():
    """A new module must be placed in the layers, or nothing checks what it imports."""
    floors = layer_modules()
    packages = {m.rpartition(".")[0] for m in floors if "." in m.removeprefix("retain.")}  # split over floors
    outside = [m for m in modules(SRC) if m not in packages | {"retain"}
               and not any(m == f or m.startswith(f + ".") for f in floors)]
    assert outside == [], f"add these to [tool.importlinter]'s layers in pyproject.toml: {outside}"


def test_the_checks_fail_on_an_import_up_the_floors_and_on_a_cycle(tmp_path):
    shutil.copytree(SRC / "retain", tmp_path / "retain", ignore=shutil.ignore_patterns("__pycache__"))
    model = tmp_path / "retain" / "models" / "dual_encoder.py"
    model.write_text(model.read_text() + "\n\ndef _up():\n    import retain.cli  # noqa: F401\n")
    res = lint(tmp_path)
    assert res.returncode != 0 and "retain.models.dual_encoder -> retain.cli" in res.stdout
    assert any("retain.models.dual_encoder" in c and "retain.cli" in c for c in cycles(import_graph(tmp_path)))
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
