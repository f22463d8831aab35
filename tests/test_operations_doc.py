"""docs/operations.md against the real code: every `threatintel ...` command it shows parses
with the real CLI (subcommands included), every upper-case variable it names is a setting (or
one of the few listed below that belong to other programs), and every metric it names is one
/metrics exports.

The guide is pasted into shells and alert rules; a renamed option, setting or metric must fail
here rather than in an operator's terminal.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from test_deploy_files import InvalidInvocation, settings_names

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "operations.md"
METRICS_SOURCE = ROOT / "src" / "threatintel" / "metrics.py"

#: Upper-case names in the guide that are not threatintel settings, and whose they are.
NOT_SETTINGS = {
    "API_CALL": "the marker of our upstream-call log lines",
    "FORWARDED_ALLOW_IPS": "uvicorn's trusted proxies",
    "HTTPS_PROXY": "httpx's proxy variable",
    "THREATINTEL_IMAGE": "the compose files' image name",
}
#: Names in the guide that look like metrics and are not, and what they are.
NOT_METRICS = {"threatintel_cache": "the cache volume as Compose names it"}
#: Words that end a command on a shell line.
SHELL_BREAKS = {"|", "||", "&&", ";", "\\"}
#: Suffixes Prometheus adds to a family's series.
SERIES_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def code_lines(text: str) -> list[str]:
    """Every line of the fenced code blocks, and every inline code span."""
    fence = re.compile(r"```[a-z]*\n(.*?)```", re.S)
    lines = [line for block in fence.findall(text) for line in block.splitlines()]
    spans = re.findall(r"``(.+?)``|`([^`\n]+)`", fence.sub("", text))
    return lines + [double or single for double, single in spans]


def top_level() -> Any:
    import typer.main

    from threatintel.cli import app

    return typer.main.get_command(app)


def commands(text: str) -> list[list[str]]:
    """Each `threatintel COMMAND ...` in ``text``'s code, as argv up to the first pipe,
    redirection or comment. A `threatintel` not followed by a command (a container's or a
    service's name, an image) starts none."""
    names = set(top_level().commands)
    found = []
    for line in code_lines(text):
        if line.startswith(("error:", "WARNING ", "INFO ")):
            continue  # a message the program prints, quoted for troubleshooting
        try:
            words = shlex.split(line.replace("…", ""), comments=True)
        except ValueError:  # an unbalanced quote in prose
            words = line.split()
        for i, word in enumerate(words[:-1]):
            if word == "threatintel" and words[i + 1] in names:
                argv = ["threatintel"]
                for arg in words[i + 1 :]:
                    if arg in SHELL_BREAKS or arg.startswith((">", "2>", "<")):
                        break
                    argv.append(arg)
                found.append(argv)
    return found


def parse(argv: list[str]) -> None:
    """Parse ``argv`` as the real CLI would, down to the last subcommand, without running it;
    InvalidInvocation with the CLI's own message when it would refuse them."""
    command, name, args, parent = top_level(), "threatintel", argv[1:], None
    try:
        while True:
            ctx = command.make_context(name, list(args), parent=parent, resilient_parsing=False)
            if not hasattr(command, "commands") or len(args) == len(ctx.args):
                return  # a command, or a group run without a subcommand (`threatintel jobs`)
            # A group leaves "subcommand args..." in ``args``, the arguments as ctx.args.
            name = args[len(args) - len(ctx.args) - 1]
            sub = command.get_command(ctx, name)
            if sub is None:
                raise InvalidInvocation(f"no such command: {name}")
            command, args, parent = sub, ctx.args, ctx
    except Exception as exc:
        # Click's usage errors (Typer ships its own Click) carry the CLI's message.
        if hasattr(exc, "format_message") and not isinstance(exc, InvalidInvocation):
            raise InvalidInvocation(exc.format_message()) from exc
        raise


def test_every_command_in_the_guide_parses_with_the_real_cli() -> None:
    """Every `threatintel ...` command the guide shows is one the real CLI accepts."""
    found = commands(guide())
    assert len(found) >= 15, found  # the extraction still finds the guide's commands
    assert ["threatintel", "cache", "clear", "--older-than", "7d", "--yes"] in found
    for argv in found:
        try:
            parse(argv)
        except InvalidInvocation as exc:
            pytest.fail(f"{shlex.join(argv)}: {exc}")


@pytest.mark.parametrize(
    "shown",
    [
        "`threatintel worker --concurency 4`",
        "`threatintel jobs remove ID`",
        "`threatintel cache clear --olderthan 7d`",
        "docker exec threatintel threatintel batch --resum ID > /dev/null",
    ],
)
def test_the_command_check_catches_a_misspelling(shown: str) -> None:
    """A misspelt option or subcommand in the guide, at any depth, fails the check."""
    text = shown if shown.startswith("`") else f"```bash\n{shown}\n```\n"
    (argv,) = commands(text)
    with pytest.raises(InvalidInvocation):
        parse(argv)


def variables(text: str) -> set[str]:
    """Upper-case names with an underscore (CACHE_TTL, LOG_LEVEL=DEBUG, *_CACHE_TTL's tail)."""
    return set(re.findall(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b", text))


def test_every_variable_in_the_guide_is_a_setting() -> None:
    """Every variable the guide tells an operator to set is one the settings read."""
    named = variables(guide())
    assert {"REDIS_URL", "EMBEDDED_WORKER", "JOB_REDELIVERY_TIMEOUT"} <= named
    unknown = named - settings_names() - set(NOT_SETTINGS)
    assert not unknown, f"not settings: {sorted(unknown)}"
    assert variables("set `CACHE_TTLL=60`") - settings_names() == {"CACHE_TTLL"}


def metric_names(text: str) -> set[str]:
    """Metric names in ``text``, without the suffixes Prometheus adds to a family's series."""
    names = set()
    for name in re.findall(r"\bthreatintel_[a-z0-9_]+", text):
        for suffix in SERIES_SUFFIXES:
            name = name.removesuffix(suffix)
        names.add(name)
    return names


def test_every_metric_in_the_guide_is_exported() -> None:
    """Every metric the guide's table and alerts name is one metrics.py exports."""
    exported = metric_names(METRICS_SOURCE.read_text(encoding="utf-8"))
    named = metric_names(guide()) - set(NOT_METRICS)
    assert {"threatintel_job_queue_depth", "threatintel_upstream_429"} <= named
    assert not named - exported, f"not exported: {sorted(named - exported)}"
    assert metric_names("rate(threatintel_cache_hitz_total[5m])") - exported
