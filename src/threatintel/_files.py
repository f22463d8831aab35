"""Files that hold the indicators of incidents are their owner's alone.

    make_private_dirs(cache_dir)                 # missing directories created 0700
    write_private_new(path, text)                # a new file, 0600; FileExistsError if taken

The umask still applies and can only make the modes stricter. Directories and files that exist
already keep their modes: they are the operator's choice. Used by the SQLite cache and quota
files and by saved reports.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path
from typing import Final

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700 (less the umask).

    ``Path.mkdir(parents=True)`` would give the parents the default mode (0755), and every one
    of them we create holds only our files. Directories that exist are left as they are.
    """
    missing: list[Path] = []
    for directory in (path, *path.parents):
        if directory.exists():
            break
        missing.append(directory)
    for directory in reversed(missing):
        with suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(directory, PRIVATE_DIR_MODE)


def write_private_new(path: Path, text: str) -> None:
    """Create ``path`` (0600) and write ``text`` as UTF-8; FileExistsError if it exists, so two
    writers can never share a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with open(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
