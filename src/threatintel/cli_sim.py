"""`threatintel demo` and `threatintel simulate`: the CLI's doors to the built-in simulator,
and ``simulator_settings``, which points every provider at one (bench scripts use it too).

cli.py and the simulator are imported in the functions: cli.py imports this module at its
bottom to register the commands, and a bench script may import this module first.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from threatintel.cli_options import (
    FormatOption,
    IncludePrivateOption,
    OutputFormat,
    OutputOption,
    SaveOption,
    WideOption,
)
from threatintel.cli_support import check_output, check_reports_dir, simulator_banner

if TYPE_CHECKING:
    from threatintel.settings import Settings


def register(app: typer.Typer) -> None:
    """Add `demo` and `simulate` to ``app``."""
    app.command()(demo)
    app.command()(simulate)


#: The demo's simulator enforces no quotas, so neither does the demo's engine.
DEMO_LIMIT = 1_000_000


def simulator_settings(base_urls: dict[str, str], **overrides: Any) -> Settings:
    """Settings that point every provider at a simulator, with obviously fake keys.

    The cache stays in memory: a demo must not leave files in the user's directory, and a
    second run should ask the simulator again.
    """
    values: dict[str, Any] = {"cache_backend": "memory"}
    for name, url in base_urls.items():
        values[f"{name}_base_url"] = url
        values[f"{name}_api_key"] = f"simulated-{name}-key"
    from threatintel.cli import load_settings  # lazily: see the module docstring
    from threatintel.providers import PROVIDERS

    for cls in PROVIDERS.values():
        for window in (*cls.windows, *cls.anonymous_windows):
            values[window.setting] = DEMO_LIMIT
    return load_settings(announce=False, **(values | overrides))


def demo(
    fmt: FormatOption = OutputFormat.table,
    wide: WideOption = False,
    include_private: IncludePrivateOption = False,
    output: OutputOption = None,
    save_report: SaveOption = False,
) -> None:
    """Analyse a sample against the built-in simulator.

    No keys and no network: every answer comes from the simulator on 127.0.0.1.
    """
    from threatintel.cli import err, errors_as_exit_codes
    from threatintel.cli_run import run_analysis, saves_report, show
    from threatintel.simulator import SimulatorConfig, SimulatorServer, demo_sample
    from threatintel.simulator.config import DEMO_LATENCY

    with errors_as_exit_codes():
        check_output(output)
    config = SimulatorConfig.load(None)
    for name, vendor in config.vendors().items():
        # The demo shows the analysis, not quota handling: no windows, a realistic latency.
        vendor.windows = ()
        vendor.latency = DEMO_LATENCY.get(name, 0.05)
    err.print(
        "[bold]Demo:[/] every answer below comes from threatintel's built-in SIMULATOR of "
        "VirusTotal, OTX, AbuseIPDB and IPinfo on 127.0.0.1 - not from the real services.",
        soft_wrap=False,
    )
    with SimulatorServer(config) as sim, errors_as_exit_codes():
        settings = simulator_settings(sim.base_urls)
        if saves_report(fmt, output, save_report):
            check_reports_dir(settings.reports_dir)
        # The simulator is on loopback: a corporate HTTP(S)_PROXY must not capture its traffic.
        analysis = run_analysis(settings, [], demo_sample(), None, trust_env=False)
    show(
        analysis,
        fmt,
        output,
        settings=settings,
        save_report=save_report,
        title="threatintel demo (answers from the simulator)",
        wide=wide,
        include_private=include_private,
    )


def simulate(
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Loopback address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port to listen on (0: any free port).")
    ] = 8900,
    scenario: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Scenario TOML file (truth per indicator)."),
    ] = None,
) -> None:
    """Run the simulator of the four services on loopback.

    It prints the *_BASE_URL and *_API_KEY variables to paste into a shell, then serves until
    Ctrl-C.
    """
    from threatintel.cli import fail
    from threatintel.simulator import SimulatorConfig, SimulatorServer

    if not 0 <= port < 65536:
        fail(f"--port must be between 0 and 65535, not {port}")
    if scenario is not None and not scenario.is_file():
        fail(f"cannot read scenario {scenario}: no such file")
    try:
        sim_config = SimulatorConfig.load(scenario)
        server = SimulatorServer(sim_config, host=host, port=port).start()
    except (ValueError, OSError, RuntimeError) as exc:  # a bad scenario, host or busy port
        fail(f"cannot run the simulator on {host}:{port}: {exc}")
    try:
        keyed = {name: vendor.keys is not None for name, vendor in sim_config.vendors().items()}
        # Printed once it listens, so whoever reads it can use the URLs at once.
        sys.stdout.write(simulator_banner(server.url, server.base_urls, keyed))
        sys.stdout.flush()
        threading.Event().wait()  # serve until Ctrl-C
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a simulator is meant to stop: not an error
    finally:
        server.stop()
