"""What every ``vidpipe`` command shares: its consoles, exit codes, options and errors.

Exit codes: 0 success, 2 bad input or configuration (a one-line reason on
stderr), 1 an internal failure.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from vidpipe.infra.errors import InternalError, PermanentError, one_line

console = Console(stderr=True)
# Wide enough for the summary when stdout is a pipe or a CI log.
out = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: object) -> Text:
    """``value`` as literal text: never read as rich markup, control characters escaped.

    Error messages and table cells hold user-controlled strings (file names,
    transcripts); none of them may style, move or clear the terminal.
    """
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
    return Text(text.replace("\n", " ").strip() if "\n" in text else text)


def say_error(exc: BaseException | str, prefix: str = "error") -> None:
    """One line on stderr: ``error: what is wrong and what to do``.

    An exception is said as :func:`one_line` says it, the line its flow run's
    state carries in the Prefect UI.
    """
    if isinstance(exc, BaseException):
        line = one_line(exc)
    else:
        line = f"{prefix}: {exc.strip().splitlines()[0] if exc.strip() else prefix}"
    head, _, rest = line.partition(": ")
    console.print(Text(f"{head}: ", style="red") + plain(rest), highlight=False, soft_wrap=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def settings_for(config_file: Path | None, data_dir: Path | None) -> Any:
    from vidpipe.infra.settings import load_settings

    return load_settings(config_file, data_dir=str(data_dir) if data_dir else None)


def catalog_for(settings: Any) -> Any:
    from vidpipe.infra.catalog import open_catalog

    return open_catalog(settings.database_url, settings.data_dir)


def bad_input(exc: PermanentError) -> typer.Exit:
    if isinstance(exc, InternalError):
        say_error(exc)
        return typer.Exit(EXIT_INTERNAL)
    say_error(exc)
    return typer.Exit(EXIT_BAD_INPUT)


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML override file.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Data directory (default ./vidpipe-data).")]


ServiceOpt = Annotated[
    Path | None, typer.Option("--service", help="Service YAML (default configs/service.yaml).")
]
