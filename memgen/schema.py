"""Table schemas declared once in schemas/*.json, loaded by writers, readers and tests."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa

_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "binary": pa.binary(),
}


@cache
def load_json(name: str) -> dict[str, Any]:
    """The parsed schemas/NAME.json document."""
    text = resources.files("memgen.schemas").joinpath(f"{name}.json").read_text("utf-8")
    return json.loads(text)


@cache
def table_schema(name: str) -> pa.Schema:
    """The Arrow schema of one memgen table (images, duplicates, rejects, ...)."""
    doc = load_json(name)
    fields = [
        pa.field(f["name"], _TYPES[f["type"]], nullable=f["nullable"],
                 metadata={"doc": f["doc"]})
        for f in doc["fields"]
    ]
    return pa.schema(fields, metadata={"memgen_table": name, "version": str(doc["version"])})

