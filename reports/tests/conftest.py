"""Fixtures of the report tests: messages written as the recorder's writer writes them (rows and
rollups in one transaction, from the analytics tests), in a time zone that is not UTC."""

from datetime import datetime

import pytest
from django.utils import timezone

from analytics.tests.conftest import fresh_cache, write  # noqa: F401  (shared fixtures)
from reports import periods

ZONE = "Europe/Berlin"  # UTC+1 in early March, DST from 29 March 2026


@pytest.fixture(autouse=True)
def berlin(settings):
    """Reports cut periods in TIME_ZONE; a zone other than UTC shows that they do."""
    settings.TIME_ZONE = ZONE
    settings.REPORT_BASE_URL = "https://monitor.example.com"
    settings.REPORT_RECIPIENTS = []
    return settings


def local(*args) -> datetime:
    """A time in the report's zone."""
    return datetime(*args, tzinfo=timezone.get_default_timezone())


@pytest.fixture
def monday():
    """The report of Monday 2 March 2026 (Berlin): [1 Mar 23:00 UTC, 2 Mar 23:00 UTC)."""
    return periods.last("day", now=local(2026, 3, 3, 9, 0))
