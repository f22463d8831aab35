"""`threatintel analyze` hands values and a file to one engine call, the file read as it goes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from support import sim_env
from terminal import PtyProcess
from threatintel.cli import app
from threatintel.cli_support import BLOCK
from threatintel.simulator import SimulatorServer

runner = CliRunner()

#: More than one read block, so the reading thread serves the rest; the spellings are in the
#: first block, read before any lookup starts.
LINES = [
    "hxxp://parcel-notice[.]com/x",
    "http://parcel-notice.com:80/x",
    "45.142.212[.]61",
    *(f"noise line {i} with nothing in it" for i in range(BLOCK // 20)),
    "last line: 185.220.101.4",
]


def by_value(output: str) -> dict[str, list[str]]:
    analysis = json.loads(output)
    return {e["indicator"]["value"]: e["inputs"] for e in analysis["enrichments"]}


def test_values_and_a_file_are_one_request(sim: SimulatorServer, tmp_path: Path) -> None:
    """An indicator given as an argument and again in the file is one enrichment, asked once,
    listing both spellings; the file is read to its end, past the first block."""
    source = tmp_path / "export.txt"
    source.write_text("\n".join(LINES) + "\n")
    result = runner.invoke(
        app, ["analyze", "45.142.212.61", "-f", str(source), "--format", "json"], env=sim_env(sim)
    )
    assert result.exit_code == 0, result.output
    found = by_value(result.stdout)
    assert found == {
        "45.142.212.61": ["45.142.212.61", "45.142.212[.]61"],
        "http://parcel-notice.com/x": [
            "hxxp://parcel-notice[.]com/x",
            "http://parcel-notice.com:80/x",
        ],
        "185.220.101.4": [],  # one of several tokens on its line: no spelling of its own
    }
    assert sim.log.count(vendor="virustotal", indicator="45.142.212.61") == 1


def test_stdin_is_read_as_it_goes(sim: SimulatorServer) -> None:
    """`-f -` reads stdin in blocks and finds the indicators past the first one."""
    result = runner.invoke(
        app, ["analyze", "-f", "-", "--format", "json"], input="\n".join(LINES), env=sim_env(sim)
    )
    assert result.exit_code == 0, result.output
    assert set(by_value(result.stdout)) == {
        "45.142.212.61",
        "http://parcel-notice.com/x",
        "185.220.101.4",
    }


def test_progress_bar_on_a_colour_terminal(sim: SimulatorServer, tmp_path: Path) -> None:
    """On a real (not dumb) terminal, analysing several indicators shows the table, not a crash."""
    env = sim_env(sim) | {"TERM": "xterm-256color", "HOME": str(tmp_path)}
    with PtyProcess(["analyze", "45.142.212.61", "185.220.101.4"], env=env, cwd=tmp_path) as term:
        code = term.wait()
    assert code == 0, term.output
    assert "2 indicators" in term.output and "unexpected" not in term.output


def test_deadline_answers_with_pending_instead_of_waiting_for_quota(sim: SimulatorServer) -> None:
    """--deadline returns while VirusTotal waits a minute for quota: its lookups show as pending,
    the other sources' answers are there."""
    # MAX_QUOTA_WAIT unset, as for a user: VirusTotal's lookups would wait for their minute.
    env = sim_env(sim, VIRUSTOTAL_RATE_LIMIT="1", CACHE_BACKEND="memory")
    del env["MAX_QUOTA_WAIT"]
    args = ["analyze", "8.8.8.8", "1.1.1.1", "9.9.9.9", "--deadline", "3", "--format", "json"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    enrichments = json.loads(result.stdout)["enrichments"]
    vt = [e["sources"]["virustotal"]["status"] for e in enrichments]
    assert vt.count("pending") >= 2  # one slot a minute: at most one answered
    assert all(e["sources"]["abuseipdb"]["status"] == "ok" for e in enrichments)
