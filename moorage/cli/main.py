"""The ``moorage`` command tree.

Server-side commands (``init``, ``up``, ``tokens``, ``keys``, ``regions``, ``credentials
export``) open the database of this machine; client commands (``login``, ``whoami``, the rest
of ``credentials``) talk to a server's API; ``agent`` runs a region agent, which talks to the
control plane with its region token. Later domains add their groups here (``apps``), each
from its own module.
"""

from __future__ import annotations

import click

from moorage import __version__
from moorage.cli.agent import agent
from moorage.cli.applogs import apps_logs
from moorage.cli.apps import apps
from moorage.cli.credentials import credentials
from moorage.cli.keys import keys
from moorage.cli.regions import regions
from moorage.cli.remote import login, whoami
from moorage.cli.server import init, tokens, up
from moorage.cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="moorage")
def cli() -> None:
    """Moorage: a self-hostable PaaS control plane."""


cli.add_command(init)
cli.add_command(up)
cli.add_command(tokens)
cli.add_command(login)
cli.add_command(whoami)
cli.add_command(credentials)
cli.add_command(keys)
cli.add_command(regions)
cli.add_command(agent)
cli.add_command(apps)
apps.add_command(apps_logs)
cli.add_command(worker)
