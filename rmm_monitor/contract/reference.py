"""The reference of every event type, rendered as Markdown from the contract code itself (docs/events.md).

The structs of events.py are the contract: what a source system may send is what msgspec accepts there, plus the
format rules the store checks in SQL (`PATTERNS`, `LIST_PATTERNS`, `TIMESTAMP_PATTERN`). A table written by hand
beside them would drift; this module walks the structs with `msgspec.inspect.type_info` (field types, Literal
choices, Optional and default fields, the Meta constraints on lengths and ranges) and renders one section per
topic and one table per event type, in a fixed order, so the same code always gives the same bytes.

    python -m rmm_monitor.contract.reference --out docs/events.md

A test renders it again and compares it with the committed file, so the reference cannot go stale: after changing
the contract, run the command and commit the result. The prose (envelope rules, identity, idempotency, reasons,
guarantees) is docs/contract.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

import msgspec
import msgspec.inspect as mi

from .events import (
    EVENT_TYPES,
    LIST_PATTERNS,
    MAX_EVENT_BYTES,
    PATTERNS,
    TIMESTAMP_FIELDS,
    TIMESTAMP_PATTERN,
    TOPIC_OF_TYPE,
    TOPICS,
    Envelope,
)

COMMAND = "python -m rmm_monitor.contract.reference --out docs/events.md"


# --- one type as (type text, rules) ------------------------------------------------------------------------------
def _bounds(low: Any, high: Any, unit: str = "") -> Optional[str]:
    """'1–64 characters', 'exactly 2 characters', 'at least 1 item', '≥ 0', '0–100'; None without bounds."""
    suffix = f" {unit}" if unit else ""
    if low is not None and low == high:
        return f"exactly {low}{suffix}"
    if low is not None and high is not None:
        return f"{low}–{high}{suffix}"
    if low is not None:
        return f"at least {low}{suffix}" if unit else f"≥ {low}"
    if high is not None:
        return f"at most {high}{suffix}" if unit else f"≤ {high}"
    return None


def _number_bounds(t: mi.IntType | mi.FloatType) -> Optional[str]:
    parts = []
    if t.gt is not None:
        parts.append(f"> {t.gt}")
    if t.lt is not None:
        parts.append(f"< {t.lt}")
    if parts:
        both = _bounds(t.ge, t.le)
        return ", ".join(([both] if both else []) + parts)
    return _bounds(t.ge, t.le)


def _literal(value: Any) -> str:
    return f"`{msgspec.json.encode(value).decode()}`"


def describe(t: mi.Type) -> tuple[str, list[str]]:
    """The JSON type of a msgspec type and the rules its constraints make. A kind of type the contract does not
    use yet raises, so a new one is rendered on purpose rather than wrongly."""
    if isinstance(t, mi.StrType):
        length = _bounds(t.min_length, t.max_length, "characters")
        return "string", [length] if length else []
    if isinstance(t, mi.IntType):
        bounds = _number_bounds(t)
        return "integer", [bounds] if bounds else []
    if isinstance(t, mi.FloatType):
        bounds = _number_bounds(t)
        return "number", [bounds] if bounds else []
    if isinstance(t, mi.BoolType):
        return "boolean", []
    if isinstance(t, mi.NoneType):
        return "null", []
    if isinstance(t, mi.LiteralType):
        kinds = sorted({"string" if isinstance(v, str) else "integer" for v in t.values})
        if len(t.values) == 1:
            return " or ".join(kinds), [f"exactly {_literal(t.values[0])}"]
        return " or ".join(kinds), ["one of " + ", ".join(_literal(v) for v in t.values)]
    if isinstance(t, mi.ListType):
        item, item_rules = describe(t.item_type)
        rules = [f"each item: {r}" for r in item_rules]
        size = _bounds(t.min_length, t.max_length, "item" if t.min_length == 1 and t.max_length is None else "items")
        return f"list of {item}", ([size] if size else []) + rules
    if isinstance(t, mi.UnionType):
        members = [describe(m) for m in t.types if not isinstance(m, mi.NoneType)]
        nullable = len(members) < len(t.types)
        text = " or ".join(m[0] for m in members) + (" or null" if nullable else "")
        return text, [r for m in members for r in m[1]]
    raise TypeError(f"the event reference does not render {type(t).__name__} yet: add it to describe()")


# --- one field as a table row ------------------------------------------------------------------------------------
def _required(field: mi.Field) -> str:
    if field.required:
        return "yes"
    if field.default is None:
        return "no (absent = null)"
    if field.default is not msgspec.NODEFAULT:
        return f"no (default {_literal(field.default)})"
    return "no"


def _format_rules(name: str, type_text: str) -> tuple[str, list[str]]:
    """The regular-expression formats the store checks, which msgspec does not see."""
    if name in TIMESTAMP_FIELDS:
        return type_text.replace("string", "timestamp", 1), [
            "RFC 3339 with `T` and an offset (`Z` or `±hh:mm`); a real instant (see Formats)"
        ]
    if name in PATTERNS:
        return type_text, [f"matches `{PATTERNS[name]}`"]
    if name in LIST_PATTERNS:
        return type_text, [f"each item matches `{LIST_PATTERNS[name]}`"]
    return type_text, []


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def field_row(field: mi.Field) -> str:
    type_text, rules = describe(field.type)
    type_text, formats = _format_rules(field.name, type_text)
    rule = "; ".join(rules + formats) or "—"
    return f"| `{field.name}` | {_cell(type_text)} | {_required(field)} | {_cell(rule)} |"


_HEAD = "| field | type | required | rule |\n|---|---|---|---|"


# --- the document ------------------------------------------------------------------------------------------------
def _struct(cls: type) -> mi.StructType:
    info = mi.type_info(cls)
    if not isinstance(info, mi.StructType):
        raise TypeError(f"{cls.__name__} is not a msgspec Struct")
    return info


def _types_of(topic: str) -> list[str]:
    return [tag for tag in EVENT_TYPES if TOPIC_OF_TYPE[tag] == topic]


def render() -> str:
    """docs/events.md, from the contract code."""
    envelope = _struct(Envelope)
    envelope_fields = {f.name: f for f in envelope.fields}
    structs = {tag: _struct(cls) for tag, cls in EVENT_TYPES.items()}
    closed = all(s.forbid_unknown_fields for s in structs.values())
    out = [
        "# Event reference",
        "",
        f"Generated from `rmm_monitor/contract/events.py` by `{COMMAND}`.",
        "Do not edit it by hand: a test compares it with a fresh rendering. What the rules mean, how events are",
        "stored and why one is refused: [contract.md](contract.md).",
        "",
        f"- Every event is one JSON object in UTF-8, at most {MAX_EVENT_BYTES} bytes ({MAX_EVENT_BYTES // 1024} KiB).",
        f"- `{envelope.tag_field}` names the type, and the type fixes the topic it must arrive on.",
        "- Unknown fields are rejected, never stored (reason `unknown_field:<name>`)."
        if closed
        else "- Some types accept fields they do not declare.",
        "- A field marked required must be present; an optional one may be absent or `null` unless a default is shown.",
        "- Range and length rules are checked while decoding, the formats (regular expressions, real instants) by "
        "the store in the same batch; either refusal is dead-lettered with its reason.",
        "",
        "| topic | event types |",
        "|---|---|",
    ]
    for topic in TOPICS:
        links = ", ".join(f"[`{tag}`](#{tag})" for tag in _types_of(topic))
        out.append(f"| `{topic}` | {links} |")
    out += ["", "## Envelope", "", "Every event carries these fields.", "", _HEAD]
    out.append(
        f"| `{envelope.tag_field}` | string | yes | the event type: one of the {len(EVENT_TYPES)} below; "
        "it fixes the topic |"
    )
    out += [field_row(f) for f in envelope.fields]
    for topic in TOPICS:
        out += ["", f"## `{topic}`"]
        for tag in _types_of(topic):
            own = [f for f in structs[tag].fields if envelope_fields.get(f.name) != f]
            out += ["", f"### `{tag}`", "", f"Topic `{topic}`; the envelope above, and:", "", _HEAD]
            out.append(f"| `{structs[tag].tag_field}` | string | yes | exactly {_literal(structs[tag].tag)} |")
            out += [field_row(f) for f in own]
    out += [
        "",
        "## Formats",
        "",
        "Regular expressions must match the whole value.",
        "",
        f"Timestamps ({', '.join(f'`{f}`' for f in TIMESTAMP_FIELDS)}), and the value must also name a real "
        "instant (no 30 February, no leap second):",
        "",
        "```",
        TIMESTAMP_PATTERN,
        "```",
        "",
        "| field | pattern |",
        "|---|---|",
    ]
    out += [f"| `{name}` | `{_cell(pattern)}` |" for name, pattern in PATTERNS.items()]
    out += [f"| `{name}` (each item) | `{_cell(pattern)}` |" for name, pattern in LIST_PATTERNS.items()]
    return "\n".join(out) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Render the event reference (Markdown) from the contract code.")
    parser.add_argument("--out", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    text = render()
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        print(path)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
