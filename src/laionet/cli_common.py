"""Pieces every `laionet` subcommand uses: option groups, one-line errors, summaries, manifests."""

from __future__ import annotations

import functools
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import click

from laionet.errors import LaionetError


def option_group(*options):
    """One decorator applying several click options, in the order listed."""
    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def manifest_beside(path: Path, command: str, params: dict, info: dict) -> None:
    from laionet.io.manifest import new_manifest, write_manifest

    manifest = new_manifest(command, params)
    manifest["stages"][command] = info
    write_manifest(path.with_name(path.name + ".manifest.json"), manifest)


def echo(message: str) -> None:
    click.echo(message, err=True)


def friendly_errors(func):
    """Turn user errors into one line and a non-zero exit; Ctrl-C into a hint that a rerun resumes."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LaionetError as exc:
            echo(f"laionet: error: {exc}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            echo("laionet: interrupted; run the same command again to resume")
            sys.exit(130)

    return wrapper


def format_counts(name: str, counts: dict) -> str:
    return f"{name}: " + ", ".join(f"{key.replace('_', ' ')} {value:,}" for key, value in counts.items()
                                    if isinstance(value, int))


@contextmanager
def missing_weights_as_lines():
    """Our missing-weights warnings as one `laionet: warning:` line each on stderr, without a source line."""
    from laionet.embed.image_encoders import MissingWeightsWarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, MissingWeightsWarning):
            echo(f"laionet: warning: {message}")
        else:
            original(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        original = warnings.showwarning
        warnings.showwarning = show
        yield
