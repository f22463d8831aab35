"""The bundled ATT&CK release (``data/attack-enterprise-<version>.json.gz``, built by
``scripts/build_attack_data.py``), read once on first need and indexed for matching by name.

``attribution`` matches evidence against it; never read from the network.
"""

from __future__ import annotations

import functools
import gzip
import json
import unicodedata
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from threatintel.models import AttackRef

ATTACK_VERSION = "18.1"
DATA_FILE = f"attack-enterprise-{ATTACK_VERSION}.json.gz"
#: Tokens this short are variant suffixes (".A", "gen") or ordinary words, not families.
MIN_TOKEN_LENGTH = 4
#: "Lazarus" is how reports name "Lazarus Group": the bare form of a group's primary name is
#: indexed when unambiguous. Not of aliases, whose bare forms are ordinary words ("Comment Group").
_GROUP_SUFFIXES = (" Group", " Team")


@dataclass(frozen=True, slots=True)
class _Hit:
    """One ATT&CK object a name resolves to, how (name, alias, former id...) and its share."""

    attack_id: str
    how: str
    share: float = 1.0


@dataclass(slots=True)
class _Attack:
    """The bundled release, indexed for matching."""

    version: str
    groups: dict[str, AttackRef]
    aliases: dict[str, list[str]]
    software: dict[str, AttackRef]
    malware: frozenset[str]
    techniques: dict[str, AttackRef]
    group_names: dict[str, list[_Hit]] = field(default_factory=dict)
    software_names: dict[str, list[_Hit]] = field(default_factory=dict)
    software_primary: dict[str, list[str]] = field(default_factory=dict)
    revoked_techniques: dict[str, str] = field(default_factory=dict)
    software_groups: dict[str, list[str]] = field(default_factory=dict)
    group_techniques: dict[str, frozenset[str]] = field(default_factory=dict)


def _fold(text: str) -> str:
    """Case, width, punctuation and spaces folded away: "APT 28", "apt-28" and "APT28" agree."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    if folded.isalnum():  # the common case (apt28, emotet, t1071): nothing to drop
        return folded
    return "".join(ch for ch in folded if ch.isalnum())


def _index(table: dict[str, list[_Hit]], name: str, hit: _Hit) -> None:
    key = _fold(name)
    if key and all(h.attack_id != hit.attack_id for h in table.setdefault(key, [])):
        table[key].append(hit)


def _ref(obj: Mapping[str, Any]) -> AttackRef:
    return AttackRef(attack_id=obj["id"], name=obj["name"], stix_id=obj.get("stix_id"))


def _parse(data: Mapping[str, Any]) -> _Attack:
    attack = _Attack(
        version=str(data["attack_version"]),
        groups={g["id"]: _ref(g) for g in data["groups"]},
        aliases={g["id"]: list(g["aliases"]) for g in data["groups"]},
        software={s["id"]: _ref(s) for s in data["software"]},
        malware=frozenset(s["id"] for s in data["software"] if s["type"] == "malware"),
        techniques={t["id"]: _ref(t) for t in data["techniques"]},
    )
    for kind, table, objects in (
        ("group", attack.group_names, data["groups"]),
        ("software", attack.software_names, data["software"]),
    ):
        for obj in objects:
            _index(table, obj["name"], _Hit(obj["id"], "name"))
            for alias in obj["aliases"]:
                _index(table, alias, _Hit(obj["id"], "alias"))
        if kind == "group":
            shorts: defaultdict[str, dict[str, str]] = defaultdict(dict)
            for obj in objects:
                for suffix in _GROUP_SUFFIXES:
                    if obj["name"].endswith(suffix):
                        short = _fold(obj["name"].removesuffix(suffix))
                        shorts[short].setdefault(obj["id"], obj["name"])
            for key, owners in shorts.items():
                if len(owners) == 1 and len(key) >= MIN_TOKEN_LENGTH and key not in table:
                    ((group, name),) = owners.items()
                    table[key] = [_Hit(group, f"short for '{name}'")]
    for obj in data["software"]:
        attack.software_primary.setdefault(_fold(obj["name"]), []).append(obj["id"])
    for old in data["revoked"]:
        new = old["revoked_by"]
        if new in attack.techniques:
            attack.revoked_techniques[old["id"]] = new
            continue
        table = attack.group_names if new in attack.groups else attack.software_names
        for name in [old["name"], *old["aliases"]]:
            # Current names win: a revoked name only fills a gap, never adds an ambiguity.
            table.setdefault(_fold(name), [_Hit(new, f"former ATT&CK {old['id']}, revoked")])
    for table in (attack.group_names, attack.software_names):
        for key, hits in table.items():
            if len(hits) > 1:
                table[key] = [_Hit(h.attack_id, h.how, 1 / len(hits)) for h in hits]
    uses = data["uses"]
    users: defaultdict[str, list[str]] = defaultdict(list)
    for group, software in sorted(uses["group_software"].items()):
        for item in software:
            users[item].append(group)
    attack.software_groups = dict(users)
    # A group listed for T1059.001 also uses T1059: an upstream parent id counts for it.
    attack.group_techniques = {
        group: frozenset(techniques) | {t.split(".")[0] for t in techniques}
        for group, techniques in uses["group_technique"].items()
    }
    return attack


@functools.cache
def _attack() -> _Attack:
    """Read the bundled release once, on first need; never from the network."""
    raw = resources.files("threatintel").joinpath("data", DATA_FILE).read_bytes()
    attack = _parse(json.loads(gzip.decompress(raw)))
    if attack.version != ATTACK_VERSION:
        raise RuntimeError(f"{DATA_FILE} holds ATT&CK {attack.version}, not {ATTACK_VERSION}")
    return attack
