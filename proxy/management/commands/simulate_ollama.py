"""``manage.py simulate_ollama``: run the simulated Ollama server in the foreground.

A thin wrapper around :mod:`proxy.simulator` (see its docstring for routes and
the ``X-Sim-*`` test knobs); ``python -m proxy.simulator`` takes the same options.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from proxy import simulator


class Command(BaseCommand):
    help = "Run a simulated Ollama server (deterministic answers, no model needed)."

    # The simulator is plain aiohttp; it needs neither the database nor system checks.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        simulator.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        config = simulator.config_from_options(options)
        try:
            for name in config.models or ():
                simulator.SimState.builtin(name)
        except ValueError as error:
            raise CommandError(str(error)) from error
        simulator.serve(config)
