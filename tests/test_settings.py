"""Settings come from the environment: defaults that work, and bad values that name themselves."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage(*args, tmp_path, **env):
    environment = {
        key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "DEBUG"}
    }
    environment.update(DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_fresh_checkout_passes_its_checks_with_no_variables_set(tmp_path):
    result = manage("check", tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_the_generated_secret_key_is_kept_between_starts(tmp_path):
    show = ("shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    first = manage(*show, tmp_path=tmp_path).stdout.strip().splitlines()[-1]
    second = manage(*show, tmp_path=tmp_path).stdout.strip().splitlines()[-1]

    assert first == second and len(first) >= 50


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("OLLAMA_URL", "ftp://example.com"),
        ("PROXY_IDLE_TIMEOUT", "soon"),
        ("PROXY_MAX_BODY_BYTES", "-1"),
        ("DATABASE_URL", "nosuchdb://x"),
    ],
)
def test_a_bad_value_stops_the_start_with_a_message_naming_the_variable(tmp_path, variable, value):
    result = manage("check", tmp_path=tmp_path, **{variable: value})

    assert result.returncode != 0
    assert variable in result.stderr


def test_https_turns_on_every_deployment_setting_at_once(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, HTTPS="1")

    assert result.returncode == 0, result.stderr + result.stdout
