"""Regenerate docs/schema/analysis-<version>.schema.json from the models.

    .venv/bin/python scripts/write_schema.py

Run it after changing a model; tests/test_reports.py fails while the committed file differs.
Bump SCHEMA_VERSION in models.py (and keep the old file) when a change is incompatible.
"""

from __future__ import annotations

import json
from pathlib import Path

from threatintel.models import SCHEMA_VERSION
from threatintel.reports.jsondoc import json_schema

target = Path(__file__).resolve().parents[1] / "docs" / "schema"
path = target / f"analysis-{SCHEMA_VERSION}.schema.json"
path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
print(f"wrote {path}")
