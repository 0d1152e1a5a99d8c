"""Checked conversion of configuration text, with errors of the form "key = value, must be ...",
and the flag-then-environment reading the sidecar's and the gateway's settings share."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace


def number_in_range(
    key: str,
    raw: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    error: type[ValueError] = ValueError,
) -> float:
    """`raw` as a finite float in [low; high] (or (low; high] with `low_open`)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bound = f"({_g(low)}; {_g(high)}]" if low_open else f"[{_g(low)}; {_g(high)}]"
        raise error(f"{key} = {shown(raw)}, must be a number in {bound}")
    return value


def _g(number: float) -> str:
    """A bound as the docs write it: 1e6, not Python's 1e+06; exact (1073741824, not 1.07374e9)."""
    short = f"{number:g}"
    if float(short) != number:
        return str(int(number)) if number == int(number) else repr(number)
    return short.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def int_in_range(
    key: str, raw: str, low: int, high: int, *, error: type[ValueError] = ValueError
) -> int:
    """`raw` as an integer within [low, high]; `error` naming `key` and the range if not."""
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise error(f"{key} = {shown(raw)}, must be an integer in [{low}; {high}]")
    return value


def shown(raw: str, limit: int = 80) -> str:
    """`raw` quoted for an error message, cut short so a huge value cannot flood the log."""
    return repr(raw if len(raw) <= limit else raw[:limit] + "...")


@dataclass(frozen=True)
class Setting:
    """One process setting: a command-line flag and the environment variable that stands for it
    (the pod manifest can use either; the downward API and Secrets only fill variables)."""

    flag: str
    env: str
    help: str
    # As --help shows it: REQUIRED, or the default's text ("" until `with_defaults` fills it).
    default: str = ""

    @property
    def name(self) -> str:
        return f"{self.flag} (env {self.env})"


REQUIRED = "required"


def with_defaults(
    settings: Mapping[str, Setting], defaults: object, shown: Mapping[str, str]
) -> dict[str, Setting]:
    """`settings` with the default --help shows: `shown[key]` where given (REQUIRED, or a
    default that is not a field's), else the field `key` of the config dataclass `defaults`,
    so the help cannot drift from the value used."""

    def text(key: str) -> str:
        if key in shown:
            return shown[key]
        value = getattr(defaults, key)
        return f"{value:g}" if isinstance(value, float) else str(value)

    return {key: replace(s, default=text(key)) for key, s in settings.items()}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The values of a feature switch that can follow where the process runs (WATCH_PODS,
# DELETION_COST): on, off, or auto, on in a Kubernetes cluster.
SWITCHES = ("auto", "on", "off")


def switched_on(switch: str, env: Mapping[str, str]) -> bool:
    """Whether a SWITCHES value turns its feature on: `on`, or `auto` in a cluster (the kubelet
    sets KUBERNETES_SERVICE_HOST in every container's environment)."""
    return switch == "on" or (switch == "auto" and bool(env.get("KUBERNETES_SERVICE_HOST")))


class SettingsReader:
    """Each setting's text: its flag if given, else its variable, else the default; every
    error names the flag and the variable, as `error`."""

    def __init__(
        self,
        prog: str,
        description: str,
        settings: Mapping[str, Setting],
        argv: Sequence[str],
        env: Mapping[str, str],
        error: type[ValueError],
    ) -> None:
        self.settings = settings
        self.env = env
        self.error = error
        self.flags = vars(argument_parser(prog, description, settings).parse_args(list(argv)))

    def raw(self, key: str, default: str | None = None) -> str | None:
        value = self.flags.get(key)
        if value is None:
            value = self.env.get(self.settings[key].env)
        return default if value is None or value.strip() == "" else value.strip()

    def text(self, key: str, default: str) -> str:
        value = self.raw(key, default)
        return default if value is None else value

    def number(self, key: str, default: float, low: float, high: float, *, low_open: bool) -> float:
        return number_in_range(
            self.settings[key].name, self.text(key, str(default)), low, high,
            low_open=low_open, error=self.error,
        )  # fmt: skip

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        name = self.settings[key].name
        return int_in_range(name, self.text(key, str(default)), low, high, error=self.error)

    def choice(self, key: str, default: str, allowed: Sequence[str], *, upper: bool = False) -> str:
        value = self.text(key, default)
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            raise self.error(
                f"{self.settings[key].name} = {shown(value)}, must be one of {tuple(allowed)}"
            )
        return value


def argument_parser(
    prog: str, description: str, settings: Mapping[str, Setting]
) -> argparse.ArgumentParser:
    """An argument parser with a flag per setting, showing its default or that it is required."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for key, setting in settings.items():
        if setting.default == REQUIRED:
            shown = f"; {REQUIRED}"
        else:
            shown = f"; default {setting.default}" if setting.default else ""
        parser.add_argument(
            setting.flag,
            dest=key,
            default=None,
            help=f"{setting.help} [env {setting.env}{shown}]".replace("%", "%%"),
        )
    return parser
