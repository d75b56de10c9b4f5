"""Rendering: aligned tables for people, JSON and YAML for scripts."""

from __future__ import annotations

import json
from typing import Any, Sequence

import click
import yaml


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], padding: int = 2) -> str:
    """Left-aligned columns separated by `padding` spaces, with an upper-case header row."""
    n = len(headers)
    cells = [[str(h).upper() for h in headers]] + [(["" if c is None else str(c) for c in row] + [""] * n)[:n] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join((" " * padding).join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def dump(data: Any, fmt: str) -> str:
    """`data` as JSON or YAML text."""
    if fmt == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")


def emit(fmt: str, data: Any, headers: Sequence[str] = (), rows: Sequence[Sequence[Any]] = ()) -> None:
    """Print `data` in the chosen format; the table form shows `headers` and `rows`."""
    fmt = fmt.lower()
    click.echo(table(headers, rows) if fmt == "table" else dump(data, fmt))


def resource_doc(record: Any) -> dict[str, Any]:
    """A v3 resource record (pool, node, workload endpoint) as its document, with its
    resourceVersion (the etcd revision)."""
    doc = json.loads(record.to_json())
    doc.setdefault("metadata", {})["resourceVersion"] = str(record.revision)
    return doc


def percent(part: int, whole: int) -> str:
    """"25 (12.5%)"-style share, one decimal."""
    return f"{part} ({100.0 * part / whole:.1f}%)" if whole else f"{part} (0.0%)"


def yes_no(value: bool) -> str:
    """A flag as a table shows it: "true" or "false"."""
    return "true" if value else "false"


def cell(value: Any) -> Any:
    """A dict or list flattened for a table cell ("-" when empty)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return value
