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
