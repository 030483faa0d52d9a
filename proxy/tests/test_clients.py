"""The official `ollama` and `openai` clients through the proxy, and the messages they leave."""

import ollama
import openai
import pytest

from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


def recorded(proxy) -> Message:
    proxy.flush()
    return Message.objects.get()


def test_it_relays_a_streamed_chat_from_the_ollama_client_and_records_it(proxy):
    parts = list(
        ollama.Client(host=proxy.url).chat(model="llama3.2", messages=QUESTION, stream=True)
    )

    final = parts[-1]
    assert final.done and final.done_reason == "stop"
    assert all(part.message.role == "assistant" for part in parts)
    message = recorded(proxy)
    assert (message.endpoint, message.model, message.status) == ("/api/chat", "llama3.2", "success")
    assert message.stream is True
    assert message.http_status == 200
    assert message.prompt == "[user]\nWhy is the sky blue?"
    assert message.response == "".join(part.message.content for part in parts)
    assert message.input_tokens == final.prompt_eval_count
    assert message.output_tokens == final.eval_count
    assert message.eval_duration_seconds == pytest.approx(final.eval_duration / 1e9)
    assert message.tokens_per_second == pytest.approx(final.eval_count / final.eval_duration * 1e9)
    assert 0 < message.ttft_seconds <= message.latency_seconds
    assert message.user == message.client_ip == "127.0.0.1"
    assert message.user_agent.startswith("ollama-python/")


def test_it_relays_a_chat_that_is_not_streamed(proxy):
    reply = ollama.Client(host=proxy.url).chat(model="llama3.2", messages=QUESTION, stream=False)

    message = recorded(proxy)
    assert message.stream is False
    assert message.response == reply.message.content
    assert message.output_tokens == reply.eval_count


def test_it_relays_generate_streamed_and_not(proxy):
    client = ollama.Client(host=proxy.url)
    streamed = "".join(
        part.response for part in client.generate(model="llama3.2", prompt="Hi", stream=True)
    )
    whole = client.generate(model="llama3.2", prompt="Hi", stream=False)

    assert streamed == whole.response
    proxy.flush()
    messages = list(Message.objects.order_by("id"))
    assert [m.stream for m in messages] == [True, False]
    assert {m.response for m in messages} == {whole.response}
    assert {m.endpoint for m in messages} == {"/api/generate"}


def test_it_records_thinking_and_tool_calls(proxy):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    reply = ollama.Client(host=proxy.url).chat(
        model="qwen3", messages=QUESTION, tools=tools, think=True, stream=False
    )

    message = recorded(proxy)
    assert message.thinking == reply.message.thinking != ""
    assert message.tool_calls[0]["function"]["name"] == reply.message.tool_calls[0].function.name


def test_it_relays_embeddings_and_counts_their_input_tokens(proxy):
    reply = ollama.Client(host=proxy.url).embed(model="all-minilm", input=["one", "two"])

    assert len(reply.embeddings) == 2
    message = recorded(proxy)
    assert message.endpoint == "/api/embed"
    assert message.prompt == "one\ntwo"
    assert message.input_tokens == reply.prompt_eval_count
    assert message.response == ""


def test_it_relays_list_and_show_without_recording_them(proxy):
    client = ollama.Client(host=proxy.url)

    names = {model.model for model in client.list().models}
    shown = client.show("llama3.2")

    assert "llama3.2:latest" in names
    assert shown.modelinfo is not None
    proxy.flush()
    assert not Message.objects.exists()


def test_it_passes_a_missing_models_error_to_the_client_and_records_it(proxy):
    with pytest.raises(ollama.ResponseError) as raised:
        list(ollama.Client(host=proxy.url).chat(model="nope", messages=QUESTION, stream=True))

    assert raised.value.status_code == 404
    assert raised.value.error == "model 'nope' not found"
    message = recorded(proxy)
    assert (message.status, message.http_status) == ("error", 404)
    assert message.error == "model 'nope' not found"


def test_it_relays_an_openai_stream_with_usage(proxy):
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="ollama")
    chunks = list(
        client.chat.completions.create(
            model="llama3.2",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    message = recorded(proxy)
    assert (message.endpoint, message.stream, message.status) == (
        "/v1/chat/completions",
        True,
        "success",
    )
    assert message.response == text != ""
    assert (message.input_tokens, message.output_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert message.done_reason == "stop"
    assert message.user_agent.startswith("OpenAI/Python")


def test_it_relays_openai_completions_embeddings_and_models(proxy):
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="ollama")

    completion = client.completions.create(model="llama3.2", prompt="Say hi", max_tokens=5)
    embedding = client.embeddings.create(model="all-minilm", input="hello")
    models = {model.id for model in client.models.list()}

    assert completion.usage.completion_tokens == 5
    assert len(embedding.data[0].embedding) > 0
    assert "llama3.2:latest" in models
    proxy.flush()
    by_endpoint = {m.endpoint: m for m in Message.objects.all()}
    assert set(by_endpoint) == {"/v1/completions", "/v1/embeddings"}
    assert by_endpoint["/v1/completions"].response == completion.choices[0].text
    assert by_endpoint["/v1/completions"].output_tokens == 5
    assert by_endpoint["/v1/completions"].done_reason == "length"
    assert by_endpoint["/v1/embeddings"].input_tokens == embedding.usage.prompt_tokens


def test_it_passes_an_openai_error_to_the_client(proxy):
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="ollama", max_retries=0)

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=QUESTION)

    assert recorded(proxy).status == "error"


def test_it_attributes_messages_to_a_trusted_user_header(proxy, settings):
    settings.PROXY_USER_HEADERS = ["x-openwebui-user-email"]
    client = ollama.Client(host=proxy.url, headers={"X-OpenWebUI-User-Email": "ada@example.com"})

    client.generate(model="llama3.2", prompt="Hi", stream=False)

    assert recorded(proxy).user == "ada@example.com"


def test_it_never_stores_authorization_or_cookies(proxy):
    client = ollama.Client(
        host=proxy.url, headers={"Authorization": "Bearer sk-secret-123", "Cookie": "session=abc"}
    )

    client.generate(model="llama3.2", prompt="Hi", stream=False)

    message = recorded(proxy)
    stored = " ".join(str(value) for value in Message.objects.values().get().values())
    assert "sk-secret-123" not in stored and "session=abc" not in stored
    assert message.status == "success"
