"""The simulator's hosted mode: an OpenAI-compatible API that serves ``/v1/*`` behind a bearer key.

Runs without Django: ``pytest proxy/tests/test_simulator_hosted.py -p no:django``.
"""

from __future__ import annotations

import argparse
import json

import openai
import pytest

from proxy.simulator import config_from_options, simulated_text
from proxy.simulator.server import add_arguments
from proxy.tests.conftest import HOSTED_API_KEY
from proxy.tests.simulator_http import HELLO, request


def test_it_answers_the_openai_sdk_that_sends_the_key(hosted_sim):
    client = openai.OpenAI(base_url=hosted_sim.url + "/v1", api_key=HOSTED_API_KEY, max_retries=0)

    chat = client.chat.completions.create(model="llama3.2", messages=HELLO, max_tokens=3)
    models = client.models.list()

    assert chat.choices[0].message.content == simulated_text(3)
    assert "llama3.2:latest" in {m.id for m in models.data}
    assert hosted_sim.stats()["last_request"]["headers"]["authorization"] == (
        f"Bearer {HOSTED_API_KEY}"
    )


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", HOSTED_API_KEY])
def test_it_refuses_a_missing_or_wrong_key_like_a_hosted_api(hosted_sim, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    status, response_headers, body = request(hosted_sim, "GET", "/v1/models", headers=headers)

    assert status == 401
    assert response_headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    assert HOSTED_API_KEY.encode() not in body


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/"), ("GET", "/api/tags"), ("POST", "/api/chat")]
)
def test_it_serves_no_ollama_path(hosted_sim, method, path):
    headers = {"Authorization": f"Bearer {HOSTED_API_KEY}"}

    status, _, body = request(hosted_sim, method, path, b"{}", headers)

    assert (status, body) == (404, b"404 page not found")


def test_an_ollama_simulator_still_ignores_the_authorization_header(sim):
    status, _, _ = request(sim, "GET", "/v1/models", headers={"Authorization": "Bearer x"})

    assert status == 200


def test_the_cli_options_switch_on_hosted_mode():
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    config = config_from_options(parser.parse_args(["--openai-only", "--api-key", "k"]))
    default = config_from_options(parser.parse_args([]))

    assert (config.openai_only, config.api_key) == (True, "k")
    assert (default.openai_only, default.api_key) == (False, "")
