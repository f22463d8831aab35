"""Setting variables in an env file without disturbing the rest of it.

    update_env_file(path, {"VIRUSTOTAL_API_KEY": "k1"})   # 0600, other lines kept as they were

A line that sets a variable being written (``NAME=...`` or ``export NAME=...``) is replaced in
place, the first one only, and later ones that would override it are dropped; variables not in
the file are appended. Comments, blank lines and every other variable stay as they were. The
new file is written beside the old one and moved over it, so a crash leaves one or the other,
never half of each, and it is the owner's alone (0600, ``threatintel._files``) whatever mode
the old file had: it holds API keys.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from threatintel._files import make_private_dirs, write_private_new

_ASSIGNMENT: Final = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
#: Values made only of these need no quotes in any dotenv dialect.
_PLAIN: Final = re.compile(r"[A-Za-z0-9_.,:/+=@%-]*")


def quote(value: str) -> str:
    """``value`` as a dotenv value that python-dotenv (pydantic-settings) reads back as is."""
    if _PLAIN.fullmatch(value):
        return value
    if "'" not in value:
        return f"'{value}'"  # single quotes: no escapes are processed
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def update_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Set ``values`` (name -> value) in the env file at ``path``, creating it if need be."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    wanted = {name.upper(): value for name, value in values.items()}
    written: set[str] = set()
    kept: list[str] = []
    for line in lines:
        match = _ASSIGNMENT.match(line)
        name = match.group(1).upper() if match else None
        if name in wanted:
            if name not in written:
                kept.append(f"{name}={quote(wanted[name])}")
                written.add(name)
            continue  # a later line for the same name would override ours
        kept.append(line)
    kept.extend(f"{name}={quote(value)}" for name, value in wanted.items() if name not in written)
    make_private_dirs(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    write_private_new(temporary, "\n".join(kept) + "\n")
    try:
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
