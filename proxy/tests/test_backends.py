"""The routing vocabulary without a network: model names, backend names, URLs shown in errors,
prices by backend, and OLLAMA_URL's list form."""

import pytest

from proxy.backends import Upstream, env_name, model_key, shown_url
from proxy.costs import PriceBook
from proxy.models import Backend, ModelPrice
from tests.test_settings import manage


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("Llama3.2:latest", "llama3.2:latest"),
        ("qwen3:8b", "qwen3:8b"),
        ("hf.co/org/model", "hf.co/org/model:latest"),
        ("registry:5000/model", "registry:5000/model:latest"),
    ],
)
def test_a_model_name_is_compared_as_ollama_compares_it(name, key):
    assert model_key(name) == key


def test_an_ollama_url_s_backend_is_named_by_host_and_port():
    assert env_name("http://127.0.0.1:11434") == "127.0.0.1:11434"
    assert env_name("https://ollama.example.com") == "ollama.example.com:443"
    assert env_name("http://[::1]:11434") == "[::1]:11434"
    assert not Backend.NAME.fullmatch(env_name("http://gpu:11434"))


def test_a_url_with_credentials_is_shown_without_them():
    assert shown_url("https://user:pw@api.example.com/v1") == "https://api.example.com/v1"
    assert shown_url("http://127.0.0.1:11434") == "http://127.0.0.1:11434"


def test_an_upstream_never_shows_its_key():
    upstream = Upstream("hosted", "https://api.example.com/v1", kind="openai", api_key="sk-x1")

    assert "sk-x1" not in repr(upstream) + upstream.described()
    assert upstream.headers_for([("authorization", "Bearer theirs"), ("cookie", "c")]) == [
        ("authorization", "Bearer sk-x1")
    ]
    assert upstream.url_for("/v1/chat/completions") == "https://api.example.com/v1/chat/completions"


def test_patterns_decide_what_a_backend_serves_when_it_has_some():
    upstream = Upstream("hosted", "https://api.example.com/v1", patterns=("gpt-4o*", "o3"))
    upstream.models = frozenset({"llama3.2:latest"})

    assert upstream.serves("gpt-4o-mini") and upstream.serves("O3")
    assert not upstream.serves("llama3.2")


def test_a_price_naming_the_backend_wins_over_one_for_any_backend():
    book = PriceBook(
        [
            ModelPrice(model_pattern="llama3.2*", input_usd_per_million=1),
            ModelPrice(model_pattern="*", backend="hosted", input_usd_per_million=5),
        ]
    )
    fields = {"model": "llama3.2", "input_tokens": 1_000_000}

    assert book.cost_usd({**fields, "backend": "hosted"}) == pytest.approx(5)
    assert book.cost_usd({**fields, "backend": "127.0.0.1:11434"}) == pytest.approx(1)
    assert book.cost_usd({**fields, "model": "gpt-4o"}) is None


def test_ollama_url_takes_several_urls_and_names_itself_when_one_is_bad(tmp_path):
    show = ("shell", "-c", "from django.conf import settings; print(settings.OLLAMA_URL)")
    good = manage(*show, tmp_path=tmp_path, OLLAMA_URL="http://a:11434/, http://b:11434")
    bad = manage("check", tmp_path=tmp_path, OLLAMA_URL="http://a:11434,ftp://b")

    assert good.stdout.strip().splitlines()[-1] == "http://a:11434,http://b:11434"
    assert bad.returncode != 0
    assert "OLLAMA_URL" in bad.stderr
