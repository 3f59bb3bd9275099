"""The README's config table against the config schema: every key documented, every documented
key real, and each default it shows the schema's own."""

import re
from pathlib import Path

import yaml

from prizeflow.config import default, dotted_keys

README = Path(__file__).resolve().parent.parent / "README.md"


def _config_rows() -> list[tuple[list[str], str]]:
    """(keys, default cell) per row of the table under '## Config'; a `.name` key continues the
    section of the full key before it (`train.grid.rank`, `.reg_param`)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Config\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        keys, prefix = [], ""
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if name.startswith("."):
                name = prefix + name[1:]
            prefix = name.rsplit(".", 1)[0] + "."
            keys.append(name)
        rows.append((keys, cells[1]))
    return rows


def _split_top_level(cell: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in cell:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return parts + [current.strip()] if current.strip() else parts


def test_every_config_key_is_in_the_readme_table_and_no_other():
    documented = [key for keys, _ in _config_rows() for key in keys]
    assert len(documented) == len(set(documented)), "a key is documented twice"
    assert sorted(documented) == sorted(dotted_keys())


def test_the_readme_shows_the_schema_defaults():
    checked = 0
    for keys, cell in _config_rows():
        values = _split_top_level(cell)
        if len(values) != len(keys):
            assert cell == "", f"{keys}: {len(values)} defaults for {len(keys)} keys"
            continue
        for key, value in zip(keys, values):
            if "<" in value:  # a derived default, described in words (<lake.root>/...)
                continue
            shown = yaml.safe_load(value.strip("`")) if value else None
            assert shown == default(key), f"README says {key} defaults to {value}"
            checked += 1
    assert checked >= 30


def test_the_readme_example_report_is_what_the_code_prints():
    """The report block under `make demo` is render() of a real `make demo` run's JSON summary
    (tests/data/demo-run-summary.json, the last line of that run's demo/run.log)."""
    import json

    from prizeflow.report import render

    text = README.read_text(encoding="utf-8")
    block = text.split("\nprizeflow demo\n", 1)[1].split("\n```", 1)[0]
    summary = json.loads((Path(__file__).parent / "data" / "demo-run-summary.json").read_text())
    assert "prizeflow demo\n" + block == render(summary, "sqlite:///mlflow.db")
    seconds = {step: round(summary[step]["seconds"]) for step in ("ingest", "train")}
    assert (f"`prizeflow run`\ntook {round(summary['seconds'])} s, of which ingest "
            f"{seconds['ingest']} s and train {seconds['train']} s") in text


PROJECT = README.parent
PACKAGE = PROJECT / "lib" / "prizeflow"


def _prizeflow_imports(path: Path) -> set[str]:
    """Every prizeflow module a file imports, at the top or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prizeflow"):
            if node.module == "prizeflow":
                found |= {f"prizeflow.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("prizeflow.")}
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_package_imports_form_no_circle():
    """README: "their imports form no circle", function-local imports included (a circle hidden
    behind a local import is still a circle)."""
    graph = {_module_name(p): _prizeflow_imports(p) for p in PACKAGE.rglob("*.py")}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                raise AssertionError("import circle: " + " -> ".join(path + [module, dep]))
            if dep not in state:
                visit(dep, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    # The leaf the Spark-facing modules share imports nothing from prizeflow.
    assert graph["prizeflow.sessions"] == set() and graph["prizeflow.steps"] == set()


def test_every_module_and_file_the_readme_layout_names_exists():
    text = README.read_text(encoding="utf-8")
    layout = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/]+\.py)`", layout))
    assert len(named) > 25
    for name in named:
        assert (PACKAGE / name).is_file() or (PROJECT / name).is_file(), name
    listed = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py"}
    # Every module of the package is placed in the layout (a new module says where it belongs).
    assert listed - named <= {"cli.py", "config.py", "errors.py", "lock.py", "snapshots.py",
                              "gate.py", "ingestion.py", "metrics.py", "rule.py", "explore.py",
                              "generate.py", "notebook.py", "recommending.py", "report.py",
                              "served_model.py", "sparkmodel.py", "progress.py",
                              "driver_stderr.py", "spark.py"}, listed - named


def _collected() -> tuple[int, int]:
    """(tests `make test` selects, tests it leaves out: `make test-deploy`'s), from one
    collection with pytest.ini's own selection."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=PROJECT, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    match = re.search(r"^(\d+)/(\d+) tests collected \((\d+) deselected\)", out, re.M)
    assert match, out[-500:]
    return int(match.group(1)), int(match.group(3))


def test_the_readme_test_counts_are_the_suites():
    """README's "make test ran N tests" and "make test-deploy M tests" are what pytest collects
    for those targets now (pytest.ini leaves the deploy tests out of `make test`)."""
    text = README.read_text(encoding="utf-8")
    default = int(re.search(r"`make test` ran (\d+) tests", text).group(1))
    deploy = int(re.search(r"`make test-deploy` (\d+) tests", text).group(1))
    assert (default, deploy) == _collected()


def test_the_makefile_targets_select_by_the_markers_pytest_declares():
    import configparser

    ini = configparser.ConfigParser()
    ini.read(PROJECT / "pytest.ini")
    declared = {line.split(":")[0].strip() for line in ini["pytest"]["markers"].splitlines()
                if line.strip()}
    assert {"spark", "mlflow", "deploy"} <= declared
    pytest_lines = [line for line in (PROJECT / "Makefile").read_text(encoding="utf-8")
                    .splitlines() if "pytest" in line]
    selections = [m for line in pytest_lines
                  for m in re.findall(r'-m "([^"]+)"|-m (\w+)', line) for m in m if m]
    assert selections
    for selection in selections:
        used = set(re.findall(r"\b(?!not\b|and\b|or\b)(\w+)", selection))
        assert used <= declared, selection
