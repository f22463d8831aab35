"""`threatintel batch` and `threatintel jobs` against the simulator: a real process killed with
SIGKILL halfway and resumed, gaps from a spent daily quota filled on resume, the job listing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import TEST_KEYS, sim_env
from threatintel.cli import app
from threatintel.simulator import SimulatorServer

runner = CliRunner()

#: 40 public domains and 40 public addresses: every source has work.
VALUES = [f"site{i}.example-{i % 5}.com" for i in range(40)] + [
    f"45.142.{i // 200}.{i % 200 + 1}" for i in range(40)
]


def write_input(path: Path) -> Path:
    path.write_text("".join(v.replace(".", "[.]", 1) + "\n" for v in VALUES), encoding="utf-8")
    return path


def jsonl_values(path: Path) -> list[str]:
    return [json.loads(line)["indicator"]["value"] for line in path.read_text().splitlines()]


def answered_keys(db: Path) -> tuple[str, set[str]]:
    """The job's id and the indicators it holds a row for, read from the store's file."""
    with sqlite3.connect(db) as conn:
        (job_id,) = conn.execute("SELECT id FROM jobs").fetchone()
        keys = {key for (key,) in conn.execute("SELECT key FROM results")}
    return job_id, keys


def rows_in(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_halfway_then_resume_asks_nothing_twice(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A batch killed with SIGKILL halfway resumes: the output holds every indicator exactly
    once and the simulator saw no second request for any lookup the job had answered."""
    for name in ("virustotal", "otx", "abuseipdb", "ipinfo"):
        sim.config.vendor(name).latency = 0.03  # slow enough to be caught halfway
    source = write_input(tmp_path / "iocs.txt")
    out = tmp_path / "out.jsonl"
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        **sim_env(sim),
        "CACHE_DIR": str(cache),
        "CACHE_TTL": "0",  # no cache: only the job's own rows can spare a second request
        "BATCH_SIZE": "8",
        "MAX_WORKERS": "4",
    }
    command = [sys.executable, "-m", "threatintel", "batch", "--format", "jsonl", "-o", str(out)]
    process = subprocess.Popen(
        [*command, str(source)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = cache / "jobs.sqlite3"
    try:
        # Polls the store (no timing assumption): kill once half the indicators have rows.
        while rows_in(db) < len(VALUES) // 2:
            assert process.poll() is None, "the batch finished before it could be killed"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        assert process.stderr is not None
        first_stderr = process.stderr.read()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    job_id, answered = answered_keys(db)
    assert f"job {job_id}" in first_stderr
    assert len(VALUES) // 2 <= len(answered) < len(VALUES)
    before = Counter((r.vendor, r.indicator) for r in sim.log.records())

    resumed = subprocess.run(
        [*command, "--resume", job_id], env=env, capture_output=True, text=True, timeout=60
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"job {job_id} done: {len(VALUES)}/{len(VALUES)} indicators" in resumed.stderr
    values = jsonl_values(out)
    assert sorted(values) == sorted(VALUES)  # every indicator, exactly once
    after = Counter((r.vendor, r.indicator) for r in sim.log.records())
    for key in answered:
        value = key.partition(":")[2]
        for vendor in ("virustotal", "otx", "abuseipdb", "ipinfo"):
            assert after[vendor, value] == before[vendor, value] <= 1, (vendor, value)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_leaves_the_job_resumable_and_says_how(sim: SimulatorServer, tmp_path: Path) -> None:
    """SIGINT mid-batch: exit 130, the job kept as cancelled, and one line naming the command
    that resumes it; that command then finishes the job."""
    for name in ("virustotal", "otx", "abuseipdb", "ipinfo"):
        sim.config.vendor(name).latency = 0.03
    source = write_input(tmp_path / "iocs.txt")
    cache = tmp_path / "cache"
    env = {**os.environ, **sim_env(sim), "CACHE_DIR": str(cache), "BATCH_SIZE": "8"}
    env["MAX_WORKERS"] = "4"
    command = [sys.executable, "-m", "threatintel", "batch", "-o", str(tmp_path / "o.jsonl")]
    process = subprocess.Popen(
        [*command, str(source)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    db = cache / "jobs.sqlite3"
    try:
        while rows_in(db) < 10:
            assert process.poll() is None, "the batch finished before it could be interrupted"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    job_id, _ = answered_keys(db)
    last = stderr.decode().strip().splitlines()[-1]
    assert (
        last
        == f"interrupted; job {job_id} kept, resume it with: threatintel batch --resume {job_id}"
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT state FROM jobs").fetchone() == ("cancelled",)
    resumed = subprocess.run(
        [*command, "--resume", job_id], env=env, capture_output=True, text=True, timeout=60
    )
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(jsonl_values(tmp_path / "o.jsonl")) == sorted(VALUES)


def test_spent_daily_quota_becomes_gaps_that_resume_fills(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """VirusTotal's daily quota runs out mid-batch: the batch finishes with the others, says
    which source owes how many answers and when it resets; --resume asks VirusTotal alone.
    The job file holds no API key."""
    source = write_input(tmp_path / "iocs.txt")
    out = tmp_path / "out.jsonl"
    env = sim_env(sim, VIRUSTOTAL_DAILY_LIMIT="10", CACHE_TTL="0", BATCH_SIZE="16")
    first = runner.invoke(app, ["batch", str(source), "-o", str(out)], env=env)
    assert first.exit_code == 0, first.output
    assert sim.log.count(vendor="virustotal") == 10
    job_id = first.stderr.split("job ", 1)[1].split()[0]
    assert f"virustotal: {len(VALUES) - 10} indicators still to ask; its quota resets" in (
        first.stderr
    )
    assert f"threatintel batch --resume {job_id}" in first.stderr
    assert sorted(jsonl_values(out)) == sorted(VALUES)

    sim.log.clear()
    env = sim_env(sim, VIRUSTOTAL_DAILY_LIMIT="1000", CACHE_TTL="0")
    second = runner.invoke(app, ["batch", "--resume", job_id, "-o", str(out)], env=env)
    assert second.exit_code == 0, second.output
    assert {r.vendor for r in sim.log.records()} == {"virustotal"}
    assert sim.log.count(vendor="virustotal") == len(VALUES) - 10
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["indicator"]["value"] for line in lines) == sorted(VALUES)
    assert all(line["sources"]["virustotal"]["status"] in ("ok", "not_found") for line in lines)
    assert "still to ask" not in second.stderr
    stored = b"".join(p.read_bytes() for p in Path(os.environ["CACHE_DIR"]).glob("jobs.sqlite3*"))
    assert stored and not any(key.encode() in stored for key in TEST_KEYS.values())


def test_jobs_lists_in_80_columns_and_show_renders_any_format(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """`jobs` lists id, input, state, done/total and verdicts within 80 columns; `jobs show`
    renders the stored results in a report format; `jobs delete` removes the job; stdin works
    as input."""
    stdin = "".join(v + "\n" for v in VALUES[:6])
    made = runner.invoke(app, ["batch", "-", "--format", "json"], input=stdin, env=sim_env(sim))
    assert made.exit_code == 0, made.output
    assert len(json.loads(made.stdout)["enrichments"]) == 6
    job_id = made.stderr.split("job ", 1)[1].split()[0]

    listing = runner.invoke(app, ["jobs"], env=sim_env(sim, COLUMNS="80"))
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.stdout.splitlines() if job_id in line)
    assert "stdin" in row and "done" in row and "6/6" in row
    assert all(len(line) <= 80 for line in listing.stdout.splitlines())

    shown = runner.invoke(app, ["jobs", "show", job_id, "--format", "csv"], env=sim_env(sim))
    assert shown.exit_code == 0, shown.output
    assert all(v in shown.stdout for v in VALUES[:6])

    deleted = runner.invoke(app, ["jobs", "delete", job_id], env=sim_env(sim))
    assert deleted.exit_code == 0, deleted.output
    gone = runner.invoke(app, ["jobs", "show", job_id], env=sim_env(sim))
    assert gone.exit_code == 2 and f"no job '{job_id}'" in gone.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["batch"],
        ["batch", "--resume", "no-such-job"],
        ["jobs", "show", "nope"],
        ["jobs", "delete", "nope"],
        ["batch", "-"],
        ["batch", "/no/such/file"],
    ],
)
def test_bad_batch_requests_are_one_line_exit_2(sim: SimulatorServer, args: list[str]) -> None:
    """No input, an input without indicators, a missing file or an unknown job id is one line
    on stderr and exit code 2."""
    result = runner.invoke(app, args, input="no indicators here\n", env=sim_env(sim))
    assert result.exit_code == 2, result.output
    shown = result.stderr.splitlines()
    lines = [line for line in shown if not line.startswith(("note:", "point", "job "))]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_resume_reuses_the_format_and_output_the_job_was_started_with(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--resume ID` alone writes the report in the job's first --format to its first -o path
    (absolute, so another working directory does not matter); a new --format given on resume
    wins and, without -o, goes to stdout rather than over the old format's file."""
    source = tmp_path / "iocs.txt"
    source.write_text("".join(v + "\n" for v in VALUES[:8]), encoding="utf-8")
    env = sim_env(sim, VIRUSTOTAL_DAILY_LIMIT="3", CACHE_TTL="0")
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["batch", str(source), "--format", "csv", "-o", "out.csv"], env=env)
    assert first.exit_code == 0, first.output
    job_id = first.stderr.split("job ", 1)[1].split()[0]
    (tmp_path / "out.csv").unlink()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = sim_env(sim, VIRUSTOTAL_DAILY_LIMIT="1000", CACHE_TTL="0")
    again = runner.invoke(app, ["batch", "--resume", job_id], env=env)
    assert again.exit_code == 0, again.output
    assert again.stdout == ""
    written = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert written.startswith("indicator") or "," in written.splitlines()[0]
    assert all(v in written for v in VALUES[:8])

    other = runner.invoke(app, ["batch", "--resume", job_id, "--format", "json"], env=env)
    assert other.exit_code == 0, other.output
    assert len(json.loads(other.stdout)["enrichments"]) == 8
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == written
