"""JSON and JSON Lines: the result models as the versioned schema in docs/schema/ writes them.

Apart from the table (text.py) so that a script's `--format json` loads no rich, no layout and
no audience rules (issue 9, start-up): these renderers need the models and nothing else.
"""

from __future__ import annotations

from threatintel.models import SCHEMA_VERSION, Analysis

SCHEMA_ID = "https://threatintel.invalid/schema/analysis-{version}.json"


def render_json(analysis: Analysis) -> str:
    return analysis.model_dump_json(indent=2, exclude_none=False) + "\n"


def render_jsonl(analysis: Analysis) -> str:
    """One enrichment per line (for SIEM pipelines and `jq -c`)."""
    return "".join(e.model_dump_json() + "\n" for e in analysis.enrichments)


def json_schema() -> dict[str, object]:
    """The JSON Schema of `--format json` (docs/schema/analysis-<version>.schema.json).

    JSON Lines output holds one `Enrichment` per line: `$defs/Enrichment` in the same file.
    """
    schema: dict[str, object] = Analysis.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID.format(version=SCHEMA_VERSION)
    schema["title"] = f"threatintel analysis, schema version {SCHEMA_VERSION}"
    return schema
