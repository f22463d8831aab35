"""`python -m threatintel` runs the CLI."""

from __future__ import annotations

from threatintel.cli import main

main()
