"""`threatintel interactive`: the session loop against the simulator with injected input, and
the real command in a pseudo-terminal (history file, multi-line paste, Ctrl-D)."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from support import TEST_KEYS, sim_env, sim_settings
from terminal import PtyProcess
from threatintel.cli_repl import run_session, split_chunk
from threatintel.simulator import SimulatorServer

REPORT = "Beacon to hxxp://cdn-update-check[.]net/x\nand 45.142.212[.]61 on port 443\n"


class Chunks:
    """Input as the terminal reader hands it over: one chunk (maybe several lines) per read."""

    def __init__(self, *chunks: str) -> None:
        self.chunks = list(chunks)

    def read(self) -> str | None:
        return self.chunks.pop(0) if self.chunks else None


def session(sim: SimulatorServer, *chunks: str) -> str:
    """Everything one session printed for these chunks."""
    screen = io.StringIO()
    console = Console(file=screen, width=80, highlight=False)
    run_session(sim_settings(sim), Chunks(*chunks), console, trust_env=False, greet=False)
    return screen.getvalue()


def test_a_pasted_text_is_one_table(sim: SimulatorServer) -> None:
    """The lines of one paste are one question: one table holding every indicator in them."""
    shown = session(sim, REPORT)
    assert shown.count("verdict") == 1
    assert "http://cdn-update-check.net/x" in shown and "45.142.212.61" in shown
    assert "2 indicators: " in shown


def test_one_engine_and_cache_serve_the_whole_session(sim: SimulatorServer) -> None:
    """Asking again in the same session is answered from the cache: nobody is asked twice."""
    shown = session(sim, "45.142.212.61", "45.142.212.61")
    asked = [r for r in sim.log.records() if "45.142.212.61" in r.path]
    assert len(asked) == len({r.vendor for r in asked})
    assert "4/4 answers from cache" in shown


def test_providers_json_and_extract(sim: SimulatorServer) -> None:
    """providers narrows the sources, json prints the last result, extract asks nobody."""
    shown = session(
        sim, "providers otx,nope", "providers otx", "8.8.8.8", "json", "extract evil[.]org"
    )
    assert "error: unknown provider 'nope'" in shown
    assert "asking: otx" in shown
    assert {r.vendor for r in sim.log.records()} == {"otx"}
    document = shown[shown.index("{\n") : shown.rindex("}\n") + 1]
    assert json.loads(document)["enrichments"][0]["indicator"]["value"] == "8.8.8.8"
    assert "domain  evil.org" in shown  # the tab, expanded by the console


def test_quit_ends_the_session(sim: SimulatorServer) -> None:
    """Nothing after quit is looked up."""
    session(sim, "quit", "8.8.8.8")
    assert not sim.log.records()


def test_a_configured_key_is_not_looked_up(sim: SimulatorServer) -> None:
    """A pasted API key is refused as such and never echoed nor sent to any source."""
    key = "7d2a" * 16  # 64 hex digits: it would pass for a SHA-256
    screen = io.StringIO()
    console = Console(file=screen, width=80)
    settings = sim_settings(sim, virustotal_api_key=key)
    run_session(settings, Chunks(f"seen {key}"), console, trust_env=False, greet=False)
    assert "matches a configured API key" in screen.getvalue()
    assert key not in screen.getvalue()
    assert not sim.log.records()


def test_commands_split_from_text() -> None:
    """A chunk's command lines run on their own; the text between them is one question."""
    assert split_chunk("a\nb\njson\nc\n\nquit") == [
        ("", "a\nb"),
        ("json", ""),
        ("", "c"),
        ("quit", ""),
    ]


def test_piped_session(sim: SimulatorServer, tmp_path: Path) -> None:
    """With stdin a pipe, each line is a question and the end of input ends the session."""
    run = subprocess.run(
        [sys.executable, "-m", "threatintel", "interactive"],
        input="8.8.8.8\nhelp\n",
        capture_output=True,
        text=True,
        env={**sim_env(sim), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "8.8.8.8" in run.stdout and "harmless" in run.stdout
    assert "extract TEXT" in run.stdout


def test_terminal_session_keeps_a_private_history_without_keys(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """On a terminal: a paste is one table, history is 0600 and never holds a configured key."""
    env = sim_env(sim, XDG_STATE_HOME=str(tmp_path / "state"))
    with PtyProcess(["interactive"], env=env, cwd=tmp_path) as term:
        term.expect("threatintel> ")
        # One write, as a terminal delivers a paste: the second line is waiting with the first.
        term.send_raw("C2 45.142.212[.]61\nalso 8.8.8.8\r")
        term.expect("2 indicators: ")
        term.expect("threatintel> ")  # the paste's answer is complete
        term.send(f"lookup {TEST_KEYS['otx']}")
        term.expect("threatintel> ", timeout=30)
        term.send("help")
        term.expect("extract TEXT")
        term.expect("threatintel> ")  # Ctrl-D at the prompt, as a user would press it
        term.send_eof()
        assert term.wait() == 0
    history = tmp_path / "state" / "threatintel" / "history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    kept = history.read_text()
    assert "C2 45.142.212[.]61" in kept and "help" in kept
    assert TEST_KEYS["otx"] not in kept
    assert "lookup" not in kept


def test_help_fits_an_80_column_terminal(sim: SimulatorServer) -> None:
    """help lists every command, each line short enough for an 80-column pane."""
    shown = session(sim, "help")
    assert all(word in shown for word in ("providers", "json", "extract", "quit"))
    assert max(len(line) for line in shown.splitlines()) <= 78
