"""What a message keeps, per route or model (RECORD_LEVELS): everything, metadata only, or no
message at all (still counted in the metrics); PII_MASK and RECORD_LEVELS checked at start."""

import os
import subprocess
import sys

import httpx
import pytest
from django.conf import settings

from proxy.models import Message
from proxy.privacy import level_for

from .metrics_scrape import requests_counted

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


def test_each_route_or_model_keeps_what_its_level_says(proxy_settings, start_proxy):
    proxy_settings.RECORD_LEVELS = [("/api/embed", "metadata"), ("llama3.2", "none"), ("*", "full")]
    proxy = start_proxy()
    before = requests_counted(proxy.url, model="llama3.2", endpoint="/api/generate")

    httpx.post(
        f"{proxy.url}/api/generate", json={"model": "llama3.2", "prompt": "Hi", "stream": False}
    )
    httpx.post(f"{proxy.url}/api/embed", json={"model": "all-minilm", "input": "secret plans"})
    httpx.post(
        f"{proxy.url}/api/chat",
        json={"model": "qwen3", "messages": QUESTION, "stream": False},
    )

    proxy.flush()
    assert requests_counted(proxy.url, model="llama3.2", endpoint="/api/generate") == before + 1
    assert not Message.objects.filter(model="llama3.2").exists()
    embed = Message.objects.get(endpoint="/api/embed")
    assert (embed.prompt, embed.messages, embed.status) == ("", None, "success")
    assert embed.input_tokens and embed.latency_seconds > 0
    chat = Message.objects.get(endpoint="/api/chat")
    assert "Why is the sky blue?" in chat.prompt
    assert chat.response and chat.thinking and chat.messages


def test_metadata_drops_every_text_field_of_a_chat(proxy_settings, start_proxy):
    proxy_settings.RECORD_LEVELS = [("*", "metadata")]
    proxy = start_proxy()

    httpx.post(
        f"{proxy.url}/api/chat",
        json={"model": "qwen3", "messages": QUESTION, "stream": False},
    )

    proxy.flush()
    chat = Message.objects.get()
    assert (chat.prompt, chat.response, chat.thinking) == ("", "", "")
    assert (chat.messages, chat.tool_calls) == (None, None)
    assert chat.model == "qwen3" and chat.output_tokens and chat.user == "127.0.0.1"


@pytest.mark.parametrize(
    ("levels", "endpoint", "model", "expected"),
    [
        ([], "/api/chat", "llama3.2", "full"),
        ([("*", "metadata")], "/api/chat", "llama3.2", "metadata"),
        ([("llama3.2", "none")], "/api/chat", "llama3.2:latest", "none"),
        ([("llama3.2", "none")], "/api/chat", "llama3.2:3b", "none"),
        ([("llama3.2:3b", "none")], "/api/chat", "llama3.2:latest", "full"),
        ([("LLAMA*", "none")], "/api/chat", "llama3.2", "none"),
        ([("llama3", "none")], "/api/chat", "llama3.2", "full"),
        # The strictest matching entry wins, whatever the order; `*` only when none matches.
        ([("/api/chat", "metadata"), ("qwen3", "none")], "/api/chat", "qwen3", "none"),
        ([("qwen3", "metadata"), ("*", "none")], "/api/chat", "qwen3", "metadata"),
        ([("/api/embed", "none"), ("*", "metadata")], "/api/chat", "qwen3", "metadata"),
        ([("/v1/*", "none")], "/v1/chat/completions", "qwen3", "none"),
        ([("/v1/*", "none")], "/api/chat", "qwen3", "full"),
    ],
)
def test_the_level_of_a_message(settings, levels, endpoint, model, expected):
    settings.RECORD_LEVELS = levels

    assert level_for(endpoint, model) == expected


def start_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    environment.update(DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECORD_LEVELS", "/api/embed=metadata,llama3.2=nothing"),
        ("RECORD_LEVELS", "llama3.2"),
        ("RECORD_LEVELS", "=full"),
        ("PII_MASK", "email,ssn"),
        ("PROXY_RATE_LIMIT_RPM", "many"),
        ("PROXY_REQUIRE_KEY", "perhaps"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(tmp_path, variable, value):
    result = start_settings(tmp_path, **{variable: value})

    assert result.returncode != 0
    assert variable in result.stderr


def test_good_values_start(tmp_path):
    result = start_settings(
        tmp_path,
        RECORD_LEVELS="/api/embed=metadata, llama3.2=none, *=full",
        PII_MASK="secret,email",
        PROXY_REQUIRE_KEY="1",
    )

    assert result.returncode == 0, result.stderr
