"""LangChain's Ollama and OpenAI integrations through the proxy.

Each call is made twice with the same arguments, straight to the simulated Ollama and through
the proxy: LangChain must get the same result both ways (the simulator answers
deterministically; only timestamps, durations and made-up ids differ between two calls), and
the proxied call must leave exactly one message with what was asked and answered.
"""

import asyncio
import json

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings, OllamaLLM
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [SystemMessage("Answer in one sentence."), HumanMessage("Why is the sky blue?")]
QUESTION_PROMPT = "[system]\nAnswer in one sentence.\n\n[user]\nWhy is the sky blue?"
# What two identical calls may differ in: Ollama's clock and LangChain's or the API's ids.
VOLATILE = {
    "created_at",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
    "id",
}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


class Forecast(BaseModel):
    city: str
    degrees: int


@pytest.fixture
def proxy(proxy_settings, start_proxy):
    """The proxy, without health checks that would mix with the requests compared."""
    proxy_settings.BACKEND_CHECK_SECONDS = 3600
    return start_proxy()


def requests_seen(simulator) -> list:
    """What reached the simulator; `Connection` is hop-by-hop, the proxy's own business."""
    requests = httpx.get(f"{simulator.url}/_sim/requests").json()
    for seen in requests:
        seen["headers"].pop("connection", None)
    return [(r["method"], r["path"], r["query"], r["body"], r["headers"]) for r in requests]


def both(call, simulator, proxy, path=""):
    """The result of `call(base_url)` straight from the simulator, then through the proxy;
    the simulator must have seen the same requests both times."""
    results, seen = [], []
    for url in (simulator.url, proxy.url):
        simulator.reset()
        results.append(call(url + path))
        seen.append(requests_seen(simulator))
    assert seen[1] == seen[0] != []
    return results


def comparable(reply: AIMessage) -> dict:
    """A chat reply without what differs between two identical calls."""
    return {
        "content": reply.content,
        "tool_calls": [(call["name"], call["args"]) for call in reply.tool_calls],
        "usage": reply.usage_metadata,
        "metadata": {k: v for k, v in reply.response_metadata.items() if k not in VOLATILE},
        "additional_kwargs": reply.additional_kwargs,
    }


def joined(chunks) -> AIMessage:
    reply = chunks[0]
    for chunk in chunks[1:]:
        reply += chunk
    return reply


def recorded(proxy) -> Message:
    """The one message the proxied call left (`get` fails on none or several)."""
    proxy.flush()
    return Message.objects.get()


def test_chat_ollama_with_a_system_prompt_answers_as_ollama_does(simulator, proxy):
    direct, proxied = both(
        lambda url: ChatOllama(model="llama3.2", base_url=url).invoke(QUESTION), simulator, proxy
    )

    assert comparable(proxied) == comparable(direct)
    assert proxied.content != ""
    message = recorded(proxy)
    assert (message.endpoint, message.model, message.status) == ("/api/chat", "llama3.2", "success")
    assert (message.http_status, message.stream) == (200, True)  # ChatOllama always streams
    assert message.prompt == QUESTION_PROMPT
    assert message.response == proxied.content
    assert message.input_tokens == proxied.usage_metadata["input_tokens"]
    assert message.output_tokens == proxied.usage_metadata["output_tokens"]
    assert message.done_reason == proxied.response_metadata["done_reason"] == "stop"
    assert message.user_agent.startswith("ollama-python/")


def test_chat_ollama_streams_the_same_chunks(simulator, proxy):
    direct, proxied = both(
        lambda url: list(ChatOllama(model="llama3.2", base_url=url).stream(QUESTION)),
        simulator,
        proxy,
    )

    assert [chunk.content for chunk in proxied] == [chunk.content for chunk in direct]
    assert len(proxied) > 2
    reply = joined(proxied)
    assert comparable(reply) == comparable(joined(direct))
    message = recorded(proxy)
    assert (message.endpoint, message.stream, message.status) == ("/api/chat", True, "success")
    assert message.prompt == QUESTION_PROMPT
    assert message.response == reply.content
    assert (message.input_tokens, message.output_tokens) == (
        reply.usage_metadata["input_tokens"],
        reply.usage_metadata["output_tokens"],
    )


def test_chat_ollama_with_bound_tools_gets_the_same_tool_call(simulator, proxy):
    def ask(url):
        model = ChatOllama(model="llama3.2", base_url=url).bind_tools([get_weather])
        return model.invoke("What is the weather in Paris?")

    direct, proxied = both(ask, simulator, proxy)

    assert comparable(proxied) == comparable(direct)
    assert [call["name"] for call in proxied.tool_calls] == ["get_weather"]
    message = recorded(proxy)
    assert (message.endpoint, message.status, message.response) == ("/api/chat", "success", "")
    assert [call["function"]["name"] for call in message.tool_calls] == ["get_weather"]
    assert message.tool_calls[0]["function"]["arguments"] == proxied.tool_calls[0]["args"]
    assert message.output_tokens == proxied.usage_metadata["output_tokens"]


def test_chat_ollama_structured_output_parses_the_same(simulator, proxy):
    direct, proxied = both(
        lambda url: (
            ChatOllama(model="llama3.2", base_url=url)
            .with_structured_output(Forecast, method="json_schema")
            .invoke("Forecast for Paris?")
        ),
        simulator,
        proxy,
    )

    assert isinstance(proxied, Forecast)
    assert proxied == direct
    message = recorded(proxy)
    assert (message.endpoint, message.status) == ("/api/chat", "success")
    assert Forecast.model_validate_json(message.response) == proxied


def test_chat_ollama_in_json_format_answers_the_same_json(simulator, proxy):
    direct, proxied = both(
        lambda url: ChatOllama(model="llama3.2", base_url=url, format="json").invoke("JSON?"),
        simulator,
        proxy,
    )

    assert comparable(proxied) == comparable(direct)
    message = recorded(proxy)
    assert json.loads(message.response) == json.loads(proxied.content)


def test_async_chat_ollama_answers_as_ollama_does(simulator, proxy):
    direct, proxied = both(
        lambda url: asyncio.run(ChatOllama(model="llama3.2", base_url=url).ainvoke(QUESTION)),
        simulator,
        proxy,
    )

    assert comparable(proxied) == comparable(direct)
    message = recorded(proxy)
    assert (message.prompt, message.response) == (QUESTION_PROMPT, proxied.content)


def test_ollama_llm_invokes_and_streams_generate(simulator, proxy):
    def complete(url):
        llm = OllamaLLM(model="llama3.2", base_url=url)
        return llm.invoke("Why is the sky blue?"), list(llm.stream("Say hi"))

    (direct_text, direct_chunks), (text, chunks) = both(complete, simulator, proxy)

    assert (text, chunks) == (direct_text, direct_chunks)
    proxy.flush()
    invoked, streamed = Message.objects.order_by("id")
    assert {invoked.endpoint, streamed.endpoint} == {"/api/generate"}
    assert (invoked.prompt, invoked.response, invoked.status) == (
        "Why is the sky blue?",
        text,
        "success",
    )
    assert (streamed.prompt, streamed.response) == ("Say hi", "".join(chunks))
    assert invoked.output_tokens == streamed.output_tokens == 24  # the simulator's default


def test_ollama_embeddings_embed_documents_and_queries(simulator, proxy):
    def embed(url):
        embeddings = OllamaEmbeddings(model="all-minilm", base_url=url)
        return embeddings.embed_documents(["one", "two"]), embeddings.embed_query("three")

    (direct_documents, direct_query), (documents, query) = both(embed, simulator, proxy)

    assert (documents, query) == (direct_documents, direct_query)
    assert len(documents) == 2 and len(query) == len(documents[0]) > 0
    proxy.flush()
    messages = list(Message.objects.order_by("id"))
    assert [(m.endpoint, m.model, m.status) for m in messages] == [
        ("/api/embed", "all-minilm", "success")
    ] * 2
    assert [m.prompt for m in messages] == ["one\ntwo", "three"]
    assert all(m.input_tokens > 0 and m.response == "" for m in messages)


def test_chat_openai_on_v1_answers_as_ollama_does(simulator, proxy):
    direct, proxied = both(
        lambda url: ChatOpenAI(model="llama3.2", base_url=url, api_key="ollama").invoke(QUESTION),
        simulator,
        proxy,
        "/v1",
    )

    assert comparable(proxied) == comparable(direct)
    message = recorded(proxy)
    assert (message.endpoint, message.model, message.stream) == (
        "/v1/chat/completions",
        "llama3.2",
        False,
    )
    assert (message.status, message.http_status) == ("success", 200)
    assert message.prompt == QUESTION_PROMPT
    assert message.response == proxied.content != ""
    assert message.input_tokens == proxied.usage_metadata["input_tokens"]
    assert message.output_tokens == proxied.usage_metadata["output_tokens"]
    assert message.user_agent.startswith("OpenAI/Python")


def test_chat_openai_streams_with_usage(simulator, proxy):
    def stream(url):
        model = ChatOpenAI(model="llama3.2", base_url=url, api_key="ollama", stream_usage=True)
        return list(model.stream(QUESTION))

    direct, proxied = both(stream, simulator, proxy, "/v1")

    assert [chunk.content for chunk in proxied] == [chunk.content for chunk in direct]
    reply = joined(proxied)
    assert comparable(reply) == comparable(joined(direct))
    assert reply.usage_metadata["output_tokens"] > 0
    message = recorded(proxy)
    assert (message.endpoint, message.stream, message.status) == (
        "/v1/chat/completions",
        True,
        "success",
    )
    assert message.response == reply.content
    assert (message.input_tokens, message.output_tokens) == (
        reply.usage_metadata["input_tokens"],
        reply.usage_metadata["output_tokens"],
    )
    assert message.done_reason == "stop"


def test_async_chat_openai_streams_the_same_chunks(simulator, proxy):
    async def stream(url):
        model = ChatOpenAI(model="llama3.2", base_url=url, api_key="ollama", stream_usage=True)
        return [chunk async for chunk in model.astream(QUESTION)]

    direct, proxied = both(lambda url: asyncio.run(stream(url)), simulator, proxy, "/v1")

    assert [chunk.content for chunk in proxied] == [chunk.content for chunk in direct]
    message = recorded(proxy)
    assert message.response == joined(proxied).content
    assert message.output_tokens == joined(proxied).usage_metadata["output_tokens"]


def test_openai_embeddings_on_v1(simulator, proxy):
    def embed(url):
        embeddings = OpenAIEmbeddings(
            model="all-minilm", base_url=url, api_key="ollama", check_embedding_ctx_length=False
        )
        return embeddings.embed_documents(["one", "two"])

    direct, proxied = both(embed, simulator, proxy, "/v1")

    assert proxied == direct
    assert len(proxied) == 2
    message = recorded(proxy)
    assert (message.endpoint, message.model, message.status) == (
        "/v1/embeddings",
        "all-minilm",
        "success",
    )
    assert message.prompt == "one\ntwo"
    assert message.input_tokens > 0
