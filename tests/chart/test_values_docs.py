"""values.yaml documents every value where it is defined (`# key -- description`), the schema
knows every documented value, and the scenarios the chart is tested with set each one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from tests.chart.chart import CHART_DIR
from tests.chart.scenarios import SCENARIOS

DOC = re.compile(r"^\s*# ([A-Za-z0-9_.]+) -- \S")


def documented() -> list[str]:
    text = (CHART_DIR / "values.yaml").read_text()
    return [match.group(1) for line in text.splitlines() if (match := DOC.match(line))]


def leaves(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaves; a list or an empty mapping counts as a leaf."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaves(value, f"{path}.")
        else:
            yield path


def is_covered(path: str, documented_keys: set[str]) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:n]) in documented_keys for n in range(1, len(parts) + 1))


def test_every_value_is_documented_where_it_is_defined() -> None:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    keys = set(documented())
    undocumented = [path for path in leaves(defaults) if not is_covered(path, keys)]
    assert undocumented == []
    stale = sorted(keys - {p for path in leaves(defaults) for p in _prefixes(path)})
    assert stale == [], "documented but not defined"


def test_documentation_comments_are_unique() -> None:
    keys = documented()
    assert len(keys) == len(set(keys))


def test_the_schema_knows_every_documented_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    for key in documented():
        node = schema
        for part in key.split("."):
            assert part in node.get("properties", {}), f"values.schema.json lacks {key}"
            node = node["properties"][part]


def test_the_scenarios_set_every_documented_value() -> None:
    set_somewhere = {
        p for values in SCENARIOS.values() for path in leaves(values) for p in _prefixes(path)
    }
    unexercised = [key for key in documented() if key not in set_somewhere]
    assert unexercised == []


def _prefixes(path: str) -> Iterator[str]:
    parts = path.split(".")
    for n in range(1, len(parts) + 1):
        yield ".".join(parts[:n])
