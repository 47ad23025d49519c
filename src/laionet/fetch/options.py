"""The image-download options that `fetch`, `predict` and `zeroshot` share, and the config they make."""

from __future__ import annotations

import click

from laionet.cli_common import option_group
from laionet.fetch.config import FetchConfig

fetch_options = option_group(
    click.option("--concurrency", type=int, default=64, show_default=True, help="Image requests in flight."),
    click.option("--timeout", type=float, default=30.0, show_default=True,
                 help="Deadline per image in seconds, redirects and retries included."),
    click.option("--retries", type=int, default=2, show_default=True, help="Retries on 408, 429, 5xx and resets."),
    click.option("--allow-private-network", is_flag=True, help="Allow private, loopback and link-local addresses."),
)


def fetch_config(concurrency: int, timeout: float, retries: int, allow_private_network: bool,
                 convert_non_rgb: bool) -> FetchConfig:
    defaults = FetchConfig()
    # a short deadline also caps the connect and read timeouts, which must not outlast it
    return FetchConfig(concurrency=concurrency, per_host=min(defaults.per_host, concurrency), retries=retries,
                       total_timeout=timeout, connect_timeout=min(defaults.connect_timeout, timeout),
                       read_timeout=min(defaults.read_timeout, timeout), convert_non_rgb=convert_non_rgb,
                       allow_private_network=allow_private_network)
