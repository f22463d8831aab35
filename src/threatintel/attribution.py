"""Evidence → ATT&CK groups: which known groups a batch points to, through what, and why.

    attribution = attribute(analysis.enrichments)
    attribution.summary   # "insufficient evidence" | "most likely G0092 TA505 (confidence 70), ..."

Sources name things; ATT&CK relates them. OTX pulses name an adversary, malware families and
technique ids; VirusTotal names a family in its threat label and tags. Each name is matched
exactly, after folding case, punctuation and spaces ("TA-505" = "ta505"), against the names and
aliases of one bundled ATT&CK release (``data/attack-enterprise-<version>.json.gz``, built by
``scripts/build_attack_data.py``). Nothing matches on substrings: "Snake Keylogger" is not Snake.
Three tolerances, each still a whole-name match: a group's primary name without " Group" or
" Team" ("Lazarus"); names and ids ATT&CK has revoked lead to their replacement ("T1086" is now
T1059.001); vendor detection names are cut at ``: / . !`` and a token that is a whole family name
counts ("Trojan:Win32/Emotet.A!MTB" → Emotet). Such tokens, VirusTotal threat labels and tags are
read strictly: only a software primary name (not an alias, never a group) of at least 5 characters
counts, and category, platform and ambiguous English words do not ("trojan.msil/snake" is not
Turla's Snake, "ransomware.play/filecoder" is not the Play group). Indicators whose verdict is
harmless are not read at all.

A group earns points (each one is a reason) only from indicators that carry evidence for it. An
indicator is linked to a group by an adversary name or by group-specific software (used by at
most 3 groups); commodity software and techniques only add points on indicators already linked:

    adversary   +50   an upstream adversary string is the group's name or alias (shared alias: /n)
    software    +40/g for each piece of software ATT&CK says the group uses, g = groups using it
                      (Emotet, used by 1 group: +40; Cobalt Strike, 29 groups: +1); at most +50
    techniques  +3    per observed technique the group uses, at most +15; never creates a candidate
    breadth     +5    per further linked indicator, at most +15

The sum is capped at 90 because third-party labels never make attribution certain. Candidates
under 20 are dropped and at most 5 are kept. "Insufficient evidence" is a common, valid answer.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# The release's facts stay importable from here, their public path (``attribution.ATTACK_VERSION``).
from threatintel._attack import (
    ATTACK_VERSION as ATTACK_VERSION,
)
from threatintel._attack import (
    DATA_FILE as DATA_FILE,
)
from threatintel._attack import (
    MIN_TOKEN_LENGTH,
    _Attack,
    _attack,
    _fold,
    _Hit,
)
from threatintel._visible import one_line
from threatintel._wording import plural
from threatintel.models import (
    AttackRef,
    Attribution,
    Enrichment,
    Evidence,
    GroupCandidate,
    SourceStatus,
    VerdictLabel,
)
from threatintel.providers import display_name

INSUFFICIENT = "insufficient evidence"

ADVERSARY_POINTS = 50
SOFTWARE_POINTS = 40
SOFTWARE_MAX = 50
TECHNIQUE_POINTS = 3
TECHNIQUE_MAX = 15
BREADTH_POINTS = 5
BREADTH_MAX = 15
CONFIDENCE_CAP = 90
CONFIDENCE_FLOOR = 20
MAX_CANDIDATES = 5
#: Software used by more groups than this is commodity (Cobalt Strike: 29 groups, Mimikatz: 51):
#: seeing it says nothing about who is behind an indicator, so it links no indicator to a group
#: and earns no breadth; it only adds its few points on indicators linked for other reasons.
GROUP_SPECIFIC_MAX = 3

#: Upstream text is attacker-influenced: it is shown clipped, and long text is not even matched
#: because no ATT&CK name comes near this length.
CLIP = 80
MAX_MATCH_LENGTH = 120
MAX_UNMATCHED = 50

#: Words that describe a threat rather than name it: VirusTotal's threat categories, vendor
#: platform prefixes and generic detections. A label token in this set is never read as a family,
#: even where ATT&CK has software of that name (S0041 "Wiper").
# fmt: off
NOT_A_FAMILY = frozenset(
    {
        "adware", "agent", "android", "backdoor", "banker", "behaveslike", "botnet", "coinminer",
        "downloader", "dropper", "exploit", "generic", "hacktool", "heur", "infostealer",
        "injector", "keylogger", "kryptik", "linux", "macos", "malware", "miner", "msil",
        "phishing", "ransom", "ransomware", "riskware", "rootkit", "script", "spyware",
        "stealer", "trojan", "virus", "w32", "w64", "win32", "win64", "wiper", "worm",
    }
)
# fmt: on
#: Vendor names separate platform, family and variant with these ("Trojan:Win32/Emotet.A!MTB",
#: "trojan.emotet/generic"). Spaces and hyphens are not separators: they are part of names.
_VENDOR_SEPARATORS = re.compile(r"[:/.!\\]+")
#: A token cut from a vendor label, or a VirusTotal tag, is a word some engine chose, not a name an
#: analyst gave: it counts only at this length ("play", "ryuk" do not), and only as a software
#: primary name, because short aliases are ordinary words ("Snake" is an alias of Uroburos).
MIN_LABEL_TOKEN = 5
#: English words and first names that are ATT&CK software names, where an unrelated family of the
#: same name is as likely (Chaos and Medusa are also ransomware unrelated to S0220 and S1220). As
#: a label token or tag they name nothing; whole OTX family names still match them. Snake and Play
#: need no entry: they are aliases only, and "play" is too short.
# fmt: off
AMBIGUOUS_WORDS = frozenset(
    {
        "anchor", "backspace", "bookworm", "calendar", "cannon", "carbon", "chaos", "denis",
        "elise", "elmer", "kevin", "mango", "medusa", "milan", "ninja", "octopus", "pandora",
        "proton", "reaver", "rover", "samurai", "shark", "solar", "spark", "vermin",
    }
)
# fmt: on
_TECHNIQUE_ID = re.compile(r"T\d{4}(?:\.\d{3})?")
# Which evidence kinds name which kind of ATT&CK object.
ADVERSARY, FAMILY, TECHNIQUE, LABEL, TAG = (
    "adversary",
    "malware_family",
    "technique",
    "threat_label",
    "tag",
)


def clip(text: str, limit: int = CLIP) -> str:
    """Upstream text made safe to show: hidden characters as escapes (``_visible``), one line,
    at most `limit`."""
    return one_line(text, limit)


# --- evidence -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Seen:
    """One raw observation: an indicator, the source and the name that source gave."""

    indicator: str
    source: str
    kind: str
    value: str
    detail: str | None

    def evidence(self) -> Evidence:
        return Evidence(
            indicator=self.indicator,
            source=self.source,
            kind=self.kind,
            value=clip(self.value),
            detail=clip(self.detail) if self.detail else None,
        )


def _observations(enrichments: Iterable[Enrichment]) -> Iterator[_Seen]:
    for enrichment in enrichments:
        if enrichment.verdict.label is VerdictLabel.HARMLESS:
            # The sources we trust call it clean: a family, technique or even a group named on it
            # is far more likely noise (CDNs, popular sites in malware reports) or sinkholed
            # infrastructure than evidence, so none of it reaches candidates or ATT&CK output.
            continue
        indicator = enrichment.indicator.value
        for name in sorted(enrichment.sources):
            result = enrichment.sources[name]
            if result.status is not SourceStatus.OK or not (
                result.threat_label
                or result.pulses
                or result.adversaries
                or result.malware_families
                or result.attack_ids
                or result.tags
            ):
                continue  # nothing named: most answers on a warm run
            # Plain loops, not comprehensions: most of these lists are empty on most answers.
            named: list[tuple[str, str | None, str | None]] = []
            add = named.append
            for pulse in result.pulses:
                title = pulse.name
                add((ADVERSARY, pulse.adversary, title))
                for item in pulse.malware_families:
                    add((FAMILY, item, title))
                for item in pulse.attack_ids:
                    add((TECHNIQUE, item, title))
            # The aggregate lists also hold OTX's "related" names, which belong to no pulse.
            for item in result.adversaries:
                add((ADVERSARY, item, None))
            for item in result.malware_families:
                add((FAMILY, item, None))
            for item in result.attack_ids:
                add((TECHNIQUE, item, None))
            add((LABEL, result.threat_label, None))
            for item in result.tags:
                add((TAG, item, None))
            seen: set[tuple[str, str]] = set()
            for kind, value, detail in named:
                if value and value.strip() and (kind, value) not in seen:
                    seen.add((kind, value))
                    yield _Seen(indicator, result.source, kind, value, detail)


def _label_token(text: str) -> str | None:
    """The folded token if it may name a family as a word of a label or tag, else None."""
    folded = _fold(text)
    if len(folded) < MIN_LABEL_TOKEN or folded in NOT_A_FAMILY or folded in AMBIGUOUS_WORDS:
        return None
    return folded


def _match_software(attack: _Attack, text: str, kind: str) -> list[_Hit]:
    if kind == TAG:
        # Tags mix file traits (peexe, macros) with family names, and ATT&CK tools are named after
        # ordinary utilities (Ping, Net, Tor): a tag counts only as an ATT&CK malware name.
        key = _label_token(text)
        found = attack.software_primary.get(key, []) if key else []
        return [_Hit(s, "name", 1 / len(found)) for s in found if s in attack.malware]
    if kind == FAMILY and _fold(text) in attack.software_names:
        # An OTX family is a name an analyst chose: aliases count when it is one whole.
        return attack.software_names[_fold(text)]
    hits: dict[str, _Hit] = {}
    for token in _VENDOR_SEPARATORS.split(text):
        key = _label_token(token)
        for software in attack.software_primary.get(key, []) if key else []:
            hits.setdefault(software, _Hit(software, f"name, from '{clip(token)}'"))
    return [_Hit(h.attack_id, h.how, 1 / len(hits)) for h in hits.values()]


@functools.lru_cache(maxsize=4096)
def _hits(kind: str, value: str) -> list[_Hit]:
    """What one name matches (shared: not to be changed). The same labels, tags and families
    come back on indicator after indicator, so each distinct one is matched once."""
    return _match(_attack(), kind, value)


def _match(attack: _Attack, kind: str, value: str) -> list[_Hit]:
    if len(value) > MAX_MATCH_LENGTH:
        return []
    if kind == ADVERSARY:
        return attack.group_names.get(_fold(value), [])
    if kind == TECHNIQUE:
        technique = value.strip().upper()
        if not _TECHNIQUE_ID.fullmatch(technique):
            return []
        if technique in attack.techniques:
            return [_Hit(technique, "id")]
        if technique in attack.revoked_techniques:
            return [_Hit(attack.revoked_techniques[technique], f"revoked {technique}")]
        return []
    return _match_software(attack, value, kind)


# --- scoring --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Case:
    """What the batch says about one group, gathered before it is scored."""

    group: str
    adversary: list[tuple[_Seen, _Hit]] = field(default_factory=list)
    software: dict[str, list[tuple[_Seen, _Hit]]] = field(default_factory=dict)
    techniques: dict[str, list[_Seen]] = field(default_factory=dict)

    def indicators(self) -> set[str]:
        # Commodity software is only recorded on indicators an adversary name or group-specific
        # software already linked, so it never adds an indicator here.
        linked = {seen.indicator for seen, _ in self.adversary}
        return linked | {seen.indicator for found in self.software.values() for seen, _ in found}


def _describe(attack: _Attack, attack_id: str) -> str:
    ref = attack.groups.get(attack_id) or attack.software[attack_id]
    return f"{ref.attack_id} {ref.name}"


def _source(seen: _Seen) -> str:
    return display_name(seen.source)


def _score(attack: _Attack, case: _Case) -> GroupCandidate:
    reasons: list[str] = []
    total = 0
    group = attack.groups[case.group]
    if case.adversary:
        found = case.adversary
        share = max(hit.share for _, hit in found)
        points = round(ADVERSARY_POINTS * share)
        names = [
            f"{_source(seen)} adversary '{clip(seen.value)}' ({hit.how}"
            + (f", shared by {round(1 / hit.share)} groups" if hit.share < 1 else "")
            + ")"
            for seen, hit in _distinct(found)
        ]
        count = len({seen.indicator for seen, _ in found})
        carry = "1 indicator carries" if count == 1 else f"{count} indicators carry"
        reasons.append(
            f"{carry} {', '.join(names)} naming {_describe(attack, case.group)}: +{points}"
        )
        total += points
    software_total = 0
    for software_id in sorted(case.software):
        found = case.software[software_id]
        users = len(attack.software_groups.get(software_id, [])) or 1
        share = max(hit.share for _, hit in found)
        points = round(SOFTWARE_POINTS * share / users)
        software_total += points
        count = len({seen.indicator for seen, _ in found})
        via = "; ".join(
            f"{_source(seen)} {seen.kind.replace('_', ' ')} '{clip(seen.value)}' ({hit.how})"
            for seen, hit in _distinct(found)
        )
        common = ", too common to link an indicator" if users > GROUP_SPECIFIC_MAX else ""
        reasons.append(
            f"{_describe(attack, software_id)} seen on {plural(count, 'indicator')} via {via}; "
            f"used by {plural(users, 'group')} in ATT&CK {attack.version}{common}: +{points}"
        )
    if software_total > SOFTWARE_MAX:
        reasons.append(f"software points capped at {SOFTWARE_MAX} (were {software_total})")
        software_total = SOFTWARE_MAX
    total += software_total
    if case.techniques:
        known = len(attack.group_techniques.get(case.group, ()))
        points = min(TECHNIQUE_MAX, TECHNIQUE_POINTS * len(case.techniques))
        observed = ", ".join(
            technique + "".join(f" (given as {v})" for v in sorted(given) if v != technique)
            for technique, given in sorted(
                (t, {seen.value.strip().upper() for seen in found})
                for t, found in case.techniques.items()
            )
        )
        reasons.append(
            f"{len(case.techniques)} of the group's {known} known techniques observed "
            f"({observed}): +{points}"
        )
        total += points
    linked = sorted(case.indicators())
    if len(linked) > 1:
        points = min(BREADTH_MAX, BREADTH_POINTS * (len(linked) - 1))
        reasons.append(f"evidence on {len(linked)} indicators: +{points}")
        total += points
    if total > CONFIDENCE_CAP:
        reasons.append(
            f"capped at {CONFIDENCE_CAP} (was {total}): third-party labels never make "
            "attribution certain"
        )
    evidence = {seen.evidence() for seen, _ in case.adversary}
    evidence |= {seen.evidence() for pairs in case.software.values() for seen, _ in pairs}
    evidence |= {seen.evidence() for found in case.techniques.values() for seen in found}
    return GroupCandidate(
        group=group,
        aliases=attack.aliases.get(case.group, []),
        confidence=min(total, CONFIDENCE_CAP),
        reasons=reasons,
        indicators=linked,
        evidence=sorted(evidence, key=_evidence_key),
        software=[attack.software[s] for s in sorted(case.software)],
        techniques=[attack.techniques[t] for t in sorted(case.techniques)],
    )


def _distinct(found: list[tuple[_Seen, _Hit]]) -> list[tuple[_Seen, _Hit]]:
    """One entry per (source, kind, folded name), in a stable order, for reason text."""
    out: dict[tuple[str, str, str], tuple[_Seen, _Hit]] = {}
    for seen, hit in sorted(found, key=lambda pair: (pair[0].source, pair[0].kind, pair[0].value)):
        out.setdefault((seen.source, seen.kind, _fold(seen.value)), (seen, hit))
    return list(out.values())


def _evidence_key(evidence: Evidence) -> tuple[str, str, str, str, str]:
    return (
        evidence.indicator,
        evidence.source,
        evidence.kind,
        evidence.value,
        evidence.detail or "",
    )


def _summary(groups: list[GroupCandidate]) -> str:
    if not groups:
        return INSUFFICIENT
    best = groups[0].confidence
    tied = [g for g in groups if g.confidence == best]
    others = len(groups) - len(tied)
    if len(tied) == 1:
        text = f"most likely {groups[0].group.attack_id} {groups[0].group.name} (confidence {best})"
    else:
        names = ", ".join(f"{g.group.attack_id} {g.group.name}" for g in tied)
        text = f"no single best match: {names} tied (confidence {best})"
    if others:
        text += f", {plural(others, 'other candidate')}"
    return text


def attribute(enrichments: Iterable[Enrichment]) -> Attribution:
    """Map the names sources gave onto ATT&CK and rank the groups they point to, with reasons."""
    reducer = Attributor()
    for enrichment in enrichments:
        reducer.add(enrichment)
    return reducer.result()


class Attributor:
    """``attribute`` as a reducer, fed enrichment by enrichment as a stream completes:

        reducer = Attributor()
        async for enrichment in engine.stream(values):
            reducer.add(enrichment)
        attribution = reducer.result()

    Each enrichment's names are matched as it arrives and only the matches are kept (not the
    enrichments); the result does not depend on the order they came in.
    """

    __slots__ = ("_cases", "_commodity", "_observed", "_software", "_techniques", "_unmatched")

    def __init__(self) -> None:
        self._cases: dict[str, _Case] = {}
        self._software: set[str] = set()
        self._commodity: dict[str, list[tuple[_Seen, _Hit]]] = defaultdict(list)
        self._techniques: dict[str, list[_Seen]] = defaultdict(list)
        self._unmatched: set[str] = set()
        self._observed = False

    def add(self, enrichment: Enrichment) -> None:
        observations = _observations((enrichment,))
        first = next(observations, None)
        if first is None:
            return  # no names at all: the ATT&CK data is not even loaded
        self._observed = True
        attack = _attack()
        for seen in itertools.chain((first,), observations):
            hits = _hits(seen.kind, seen.value)
            if not hits:
                # Tags are mostly file traits and categories: listing them would bury the
                # real misses.
                if seen.kind != TAG:
                    self._unmatched.add(clip(seen.value))
                continue
            for hit in hits:
                if seen.kind == ADVERSARY:
                    self._case(hit.attack_id).adversary.append((seen, hit))
                elif seen.kind == TECHNIQUE:
                    self._techniques[hit.attack_id].append(seen)
                else:
                    self._software.add(hit.attack_id)
                    users = attack.software_groups.get(hit.attack_id, [])
                    if len(users) > GROUP_SPECIFIC_MAX:
                        self._commodity[hit.attack_id].append((seen, hit))
                        continue
                    for group in users:
                        self._case(group).software.setdefault(hit.attack_id, []).append((seen, hit))

    def _case(self, group: str) -> _Case:
        return self._cases.setdefault(group, _Case(group))

    def result(self) -> Attribution:
        """The attribution of everything added so far."""
        if not self._observed:
            return Attribution(attack_version=ATTACK_VERSION, summary=INSUFFICIENT)
        attack = _attack()
        cases: dict[str, _Case] = {}
        for group, found in self._cases.items():
            # A copy: result() may be asked again as more enrichments arrive.
            group_case = cases[group] = _Case(group, list(found.adversary), dict(found.software))
            linked = group_case.indicators()
            for software, pairs in self._commodity.items():
                # Like techniques, commodity software only counts on indicators already linked.
                on_linked = [(seen, hit) for seen, hit in pairs if seen.indicator in linked]
                if on_linked and group in attack.software_groups[software]:
                    group_case.software[software] = on_linked
            known = attack.group_techniques.get(group, frozenset())
            for technique, seen_on in self._techniques.items():
                # Techniques are shared widely: they only count on indicators already linked.
                mine = [seen for seen in seen_on if seen.indicator in linked]
                if technique in known and mine:
                    group_case.techniques[technique] = mine

        scored = [_score(attack, cases[g]) for g in sorted(cases)]
        ranked = sorted(
            (c for c in scored if c.confidence >= CONFIDENCE_FLOOR),
            key=lambda c: (-c.confidence, c.group.attack_id),
        )[:MAX_CANDIDATES]
        return Attribution(
            attack_version=attack.version,
            summary=_summary(ranked),
            groups=ranked,
            software=[attack.software[s] for s in sorted(self._software)],
            techniques=[attack.techniques[t] for t in sorted(self._techniques)],
            unmatched=sorted(self._unmatched)[:MAX_UNMATCHED],
        )


# --- shared with the STIX and MISP renderers ----------------------------------------------


def fold(text: str) -> str:
    """Case, width, punctuation and spaces folded away, as the matcher compares names."""
    return _fold(text)


def evidenced_names(enrichment: Enrichment, attribution: Attribution) -> set[str]:
    """Folded software names and technique ids this indicator's own evidence mentions.

    Whole values and their words both count ("trojan.emotet/zusy" names Emotet), as in the
    matcher; adversary strings name groups, not software, so they are left out. A harmless
    indicator names nothing, as the matcher ignores it.
    """
    if enrichment.verdict.label is VerdictLabel.HARMLESS:
        return set()
    value = enrichment.indicator.value
    raw = [
        e.value
        for group in attribution.groups
        for e in group.evidence
        if e.indicator == value and e.kind != "adversary"
    ]
    for result in enrichment.sources.values():
        raw += [*result.malware_families, *result.attack_ids]
        raw += [result.threat_label] if result.threat_label else []
        for pulse in result.pulses:
            raw += [*pulse.malware_families, *pulse.attack_ids]
    folded = {_fold(text) for text in raw}
    # Words are compared only with primary names of software the attribution already holds, so
    # aliases cannot mislead here and 4-letter families ("ransom.clop/x") may still be named.
    folded |= {
        key
        for text in raw
        for key in map(_fold, _VENDOR_SEPARATORS.split(text))
        if len(key) >= MIN_TOKEN_LENGTH and key not in AMBIGUOUS_WORDS
    }
    return folded - {""}


def named(refs: Iterable[AttackRef], names: set[str]) -> Iterator[AttackRef]:
    """The refs whose ATT&CK id or folded name is among the folded names."""
    for ref in refs:
        if _fold(ref.attack_id) in names or _fold(ref.name) in names:
            yield ref
