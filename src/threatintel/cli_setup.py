"""`threatintel setup`: ask for the four API keys, check each with its service, save them.

Keys are read without echo (``getpass`` on a terminal; one line each from a pipe), checked
against the configured base URL (the simulator in tests) and written to the user's config file
(``settings.user_config_file()``, read from every directory) or to the global ``--env-file``,
mode 0600, other lines kept. Nothing here prints a key: only its fingerprint.

A check asks the service about one well-known address with the key, through the same provider
client as a lookup, unless the provider offers a way to read the account that spends no quota
(``account_limits``, VirusTotal's ``/users/{key}/overall_quotas``): then that. A refused key is
one line and is saved only if the user insists; a key that could not be checked (no network)
is saved unless the user says no.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import typer

if TYPE_CHECKING:
    from threatintel.providers import Provider
    from threatintel.settings import Settings

#: What the key checks ask about: public, stable, and answered by every IP source.
PROBE_ADDRESS: Final = "8.8.8.8"


class Verdict(StrEnum):
    valid = "valid"
    refused = "refused"
    unknown = "unknown"


@dataclass(frozen=True, slots=True)
class KeyCheck:
    verdict: Verdict
    detail: str


def register(app: typer.Typer) -> None:
    """Add the `setup` command to ``app``."""
    app.command("setup")(setup)


def ask_secret(prompt: str) -> str:
    """A line typed without echo on a terminal; from a pipe, the next line (EOF: empty)."""
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        try:
            return getpass.getpass(prompt).strip()
        except KeyboardInterrupt:
            sys.stderr.write("\n")  # getpass leaves the cursor after the prompt
            raise
    sys.stderr.write(prompt + "\n")
    sys.stderr.flush()
    return (sys.stdin.readline() if sys.stdin is not None else "").strip()


def ask_yes(prompt: str, *, default: bool) -> bool:
    """y or n (Enter: ``default``), typed (with echo) or the next line of a pipe."""
    if sys.stdin is None:
        sys.stderr.write(f"{prompt} [{'Y/n' if default else 'y/N'}]\n")
        return default
    try:  # from the question on: Ctrl-C as soon as it shows must end its line too
        sys.stderr.write(f"{prompt} [{'Y/n' if default else 'y/N'}] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
    except KeyboardInterrupt:
        sys.stderr.write("\n")  # the cursor is still after the question
        raise
    if not sys.stdin.isatty():
        sys.stderr.write("\n")  # what a terminal would have echoed
    return default if not answer else answer in ("y", "yes")


async def check_key(provider: Provider, key: str) -> KeyCheck:
    """Ask ``provider``'s service whether it takes ``key`` (see the module docstring)."""
    from threatintel.errors import AuthenticationFailed, ProviderError, RateLimited
    from threatintel.indicators import parse_indicator

    account = getattr(provider, "account_limits", None)
    try:
        # None: no account endpoint, or it did not answer with limits (a refused key among
        # other reasons); then one lookup tells which.
        if account is not None and await account(key) is not None:
            return KeyCheck(Verdict.valid, "accepted (account read, no quota spent)")
        await provider.lookup(parse_indicator(PROBE_ADDRESS), key)
    except AuthenticationFailed as exc:
        return KeyCheck(Verdict.refused, f"refused: {exc.message}")
    except RateLimited:
        return KeyCheck(Verdict.valid, "accepted, but over its quota right now")
    except ProviderError as exc:
        return KeyCheck(Verdict.unknown, f"could not be checked: {exc.message}")
    return KeyCheck(Verdict.valid, f"accepted (one lookup of {PROBE_ADDRESS})")


async def check_keys(settings: Settings, keys: dict[str, list[str]]) -> dict[str, list[KeyCheck]]:
    """Check every given key with its service, all at once, over one HTTP client."""
    import asyncio

    from threatintel.wiring import build_client, build_providers

    client = build_client(settings)
    try:
        providers = build_providers(settings, client)
        checks = {
            name: [check_key(providers[name], key) for key in given] for name, given in keys.items()
        }
        return {name: list(await asyncio.gather(*calls)) for name, calls in checks.items()}
    finally:
        await client.aclose()


def target_file() -> Path:
    """The global --env-file when given, else the user's config file."""
    from threatintel.cli import env_file_option
    from threatintel.settings import user_config_file

    return env_file_option() or user_config_file()


def _settings() -> Settings:
    """The settings as the other commands read them, with two allowances: an --env-file that
    does not exist yet reads as empty (setup creates it), and a saved key that makes them
    invalid is left out (setup is how such a key gets replaced)."""
    from threatintel.cli import EXIT_CONFIG, env_file_option, fail
    from threatintel.errors import ConfigError
    from threatintel.providers import PROVIDERS
    from threatintel.settings import Settings

    chosen = env_file_option()
    env_file = chosen if chosen is None or chosen.exists() else Path(os.devnull)
    try:
        return Settings.load(env_file=env_file)
    except ConfigError:
        pass
    no_keys: dict[str, Any] = {f"{name}_api_key": [] for name in PROVIDERS}
    try:
        return Settings.load(env_file=env_file, **no_keys)
    except ConfigError as exc:  # not (only) the keys: the user must fix it by hand
        fail(str(exc), EXIT_CONFIG)


def _ask_keys(settings: Settings) -> dict[str, list[str]]:
    """Each provider's new keys as typed (none for Enter), without echo."""
    from threatintel._redaction import fingerprint
    from threatintel.cli import err
    from threatintel.providers import PROVIDERS

    given: dict[str, list[str]] = {}
    for name, cls in PROVIDERS.items():
        variable = f"{name.upper()}_API_KEY"
        current = settings.api_keys(name)
        hint = f"current {', '.join(fingerprint(k) for k in current)}" if current else "not set"
        optional = "" if cls.requires_key else ", optional"
        value = ask_secret(f"{cls.title} API key ({hint}{optional}): ")
        if value:
            given[name] = [part.strip() for part in value.split(",") if part.strip()]
            if variable in os.environ:
                err.print(f"  note: {variable} is also set in the environment, which wins")
    return given


def setup() -> None:
    """Ask for the API keys, check and save them.

    Each new key is checked with its service, then saved (mode 0600) to your config file
    (see the README) or to --env-file PATH when given. Enter keeps the current key (or
    skips). Keys are never printed, only their fingerprints.
    """
    import asyncio

    from threatintel._envfile import update_env_file
    from threatintel._redaction import fingerprint
    from threatintel.cli import EXIT_FAILURE, err, errors_as_exit_codes, fail
    from threatintel.cli_support import endpoints_note
    from threatintel.providers import PROVIDERS

    settings = _settings()
    if line := endpoints_note(settings.custom_endpoints()):
        err.print(line, soft_wrap=False, markup=False)
    path = target_file()
    err.print(
        f"API keys go to {path} (only you can read it). Enter keeps the current one.",
        markup=False,
    )
    with errors_as_exit_codes():  # Ctrl-C at a prompt: "interrupted", exit 130
        given = _ask_keys(settings)
    if not given:
        err.print("nothing changed")
        return
    with errors_as_exit_codes():
        results = asyncio.run(check_keys(settings, given))
    saved: dict[str, str] = {}
    with errors_as_exit_codes():  # Ctrl-C at a question: "interrupted", exit 130
        for name, checks in results.items():
            title = PROVIDERS[name].title
            kept = []
            for key, check in zip(given[name], checks, strict=True):
                # The detail may quote the vendor's message: text, never markup.
                err.print(
                    f"  {title}: {fingerprint(key)} {check.detail}", soft_wrap=False, markup=False
                )
                if check.verdict is Verdict.refused:
                    keep = ask_yes(f"  Save {title}'s refused key anyway?", default=False)
                elif check.verdict is Verdict.unknown:
                    keep = ask_yes(f"  Save {title}'s unchecked key?", default=True)
                else:
                    keep = True
                if keep:
                    kept.append(key)
            if kept:
                saved[f"{name.upper()}_API_KEY"] = ",".join(kept)
    if not saved:
        err.print("nothing saved")
        return
    try:
        update_env_file(path, saved)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or 'I/O error'}", EXIT_FAILURE)
    names = ", ".join(sorted(saved))
    err.print(f"saved {names} to {path} (mode 0600)", soft_wrap=False, markup=False)
