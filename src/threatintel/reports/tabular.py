"""CSV: one row per indicator, safe to open in a spreadsheet.

A CSV is read in spreadsheets and, as often, with ``cat`` or ``less`` in a terminal: every cell
is one line of visible text (``_visible.visible``: tab and newline become spaces, control, bidi
and zero-width characters show as escapes such as ``\\x1b``), so no cell can send an escape
sequence to a terminal or hide a character. A cell that then starts (after spaces) with `=`, `+`,
`-` or `@` is a formula to Excel, LibreOffice and Google Sheets (CSV injection): such cells get a
leading apostrophe, which the spreadsheet shows as text and strips. The indicator column stays
exact (it is what gets looked up or fed to a SIEM; the parser percent-encodes what a URL hides);
URLs and domains inside upstream text (reasons, adversary and malware names,
organisations) are defanged like every human-facing format (``audience.for_people``), because a
spreadsheet turns them into live links.
"""

from __future__ import annotations

import csv
import io

from threatintel._visible import visible
from threatintel.models import Analysis, Enrichment
from threatintel.providers import PROVIDERS
from threatintel.reports.audience import for_people

# Tab and carriage return lead a formula too, but no cell keeps them (see safe_cell).
FORMULA_PREFIXES = ("=", "+", "-", "@")
#: One status column per registered source, in the registry's order (the CSV header is fixed
#: when this module loads: a spreadsheet's columns do not move from one run to the next).
PROVIDER_ORDER = tuple(PROVIDERS)
COLUMNS = (
    "indicator",
    "type",
    "verdict",
    "score",
    "confidence",
    "reasons",
    *(f"{name}_status" for name in PROVIDER_ORDER),
    "vt_malicious",
    "vt_total",
    "otx_pulses",
    "adversaries",
    "malware_families",
    "attack_ids",
    "abuse_confidence",
    "abuse_reports",
    "country",
    "asn",
    "organization",
    "first_seen",
    "last_seen",
    "cached_sources",
)


def safe_cell(value: object) -> str:
    """One line of visible text (hidden characters as escapes), spreadsheet formulas neutralised."""
    text = "" if value is None else visible(value)
    # Spaces too: an import that trims them (LibreOffice's option) would reveal the formula.
    return "'" + text if text.lstrip(" ").startswith(FORMULA_PREFIXES) else text


def _row(enrichment: Enrichment) -> dict[str, object]:
    sources = enrichment.sources
    vt = sources.get("virustotal")
    otx = sources.get("otx")
    abuse = sources.get("abuseipdb")
    geo = next((r.geo for r in sources.values() if r.geo is not None), None)
    seen_first = [r.first_seen for r in sources.values() if r.first_seen]
    seen_last = [r.last_seen for r in sources.values() if r.last_seen]
    row: dict[str, object] = {
        "indicator": enrichment.indicator.value,
        "type": enrichment.indicator.type.value,
        "verdict": enrichment.verdict.label.value,
        "score": enrichment.verdict.score,
        "confidence": enrichment.verdict.confidence,
        "reasons": " | ".join(enrichment.verdict.reasons),
        "vt_malicious": vt.detections.malicious if vt and vt.detections else "",
        "vt_total": vt.detections.total if vt and vt.detections else "",
        "otx_pulses": otx.pulse_count if otx and otx.pulse_count is not None else "",
        "adversaries": "; ".join(otx.adversaries) if otx else "",
        "malware_families": "; ".join(otx.malware_families) if otx else "",
        "attack_ids": "; ".join(otx.attack_ids) if otx else "",
        "abuse_confidence": abuse.abuse.confidence if abuse and abuse.abuse else "",
        "abuse_reports": abuse.abuse.total_reports if abuse and abuse.abuse else "",
        "country": geo.country if geo else "",
        "asn": geo.asn if geo and geo.asn else "",
        "organization": geo.organization if geo else "",
        "first_seen": min(seen_first).isoformat().replace("+00:00", "Z") if seen_first else "",
        "last_seen": max(seen_last).isoformat().replace("+00:00", "Z") if seen_last else "",
        "cached_sources": sum(r.cached for r in sources.values()),
    }
    for name in PROVIDER_ORDER:
        result = sources.get(name)
        row[f"{name}_status"] = result.status.value if result else ""
    return row


def render_csv(analysis: Analysis) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for enrichment in for_people(analysis).enrichments:
        writer.writerow({k: safe_cell(v) for k, v in _row(enrichment).items()})
    return buffer.getvalue()
