"""Conversations: multi-turn chats through the proxy with the official clients, grouped into
one conversation each and stored without repeating their history."""

import json
import uuid
from datetime import timedelta

import ollama
import openai
import pytest
from django.db import connection

from proxy import conversations, retention
from proxy.models import Conversation, Message

from .test_recorder import database_locked

pytestmark = pytest.mark.django_db(transaction=True)

QUESTIONS = ["Why is the sky blue?", "And at sunset?", "What about on Mars?", "Thanks!"]


@pytest.fixture(autouse=True)
def forget_anchors():
    """Each test has a fresh database: what the writer remembers of earlier chats is gone."""
    conversations.forget()
    yield
    conversations.forget()


def chat(client, questions, *, history=(), **options) -> list[dict]:
    """A chat as a client program has it: each question sent with the whole history so far;
    returns the turns it added."""
    history = list(history)
    start = len(history)
    for question in questions:
        history.append({"role": "user", "content": question})
        reply = client.chat(model="llama3.2", messages=history, **options)
        history.append({"role": "assistant", "content": reply.message.content})
    return history[start:]


def full_history(message: Message) -> list[dict]:
    turns, missing = conversations.history(message)
    assert missing == 0
    return [{"role": turn["role"], "content": turn["content"]} for turn in turns]


def test_a_multi_turn_chat_from_the_ollama_client_is_one_conversation(proxy):
    history = chat(ollama.Client(host=proxy.url), QUESTIONS)
    proxy.flush()

    conversation = Conversation.objects.get()
    messages = list(Message.objects.order_by("id"))
    assert [message.conversation_id for message in messages] == [conversation.pk] * 4
    assert conversation.turns == 4
    assert conversation.input_tokens == sum(message.input_tokens for message in messages)
    assert conversation.output_tokens == sum(message.output_tokens for message in messages)
    assert conversation.started_at == messages[0].timestamp
    assert conversation.last_at == messages[-1].timestamp
    # Each turn stores only its new question; the history is rebuilt as the client sent it.
    assert [message.messages for message in messages] == [
        [{"role": "user", "content": question}] for question in QUESTIONS
    ]
    assert [message.history_turns for message in messages] == [None, 2, 4, 6]
    assert messages[3].prompt == "[user]\nThanks!"
    for number, message in enumerate(messages):
        assert full_history(message) == history[: 2 * number + 1]


def test_two_chats_are_two_conversations_even_when_they_open_alike(proxy):
    client = ollama.Client(host=proxy.url)
    chat(client, QUESTIONS[:2])
    chat(client, [QUESTIONS[0], "And on the Moon?"])
    proxy.flush()

    first, second = Conversation.objects.order_by("id")
    assert (first.turns, second.turns) == (2, 2)
    assert list(second.messages.order_by("id").values_list("history_turns", flat=True)) == [
        None,
        2,
    ]


def test_a_turn_finds_its_history_in_the_database_when_this_process_never_saw_it(proxy):
    """What another worker process wrote is found by the same hashes, through the database."""
    client = ollama.Client(host=proxy.url)
    history = chat(client, QUESTIONS[:2])
    proxy.flush()
    conversations.forget()
    history.append({"role": "user", "content": QUESTIONS[2]})
    client.chat(model="llama3.2", messages=history)
    proxy.flush()

    conversation = Conversation.objects.get()
    last = Message.objects.latest("id")
    assert (conversation.turns, last.conversation_id, last.history_turns) == (3, conversation.pk, 4)
    assert last.messages == [{"role": "user", "content": QUESTIONS[2]}]
    assert full_history(last) == history


def test_an_explicit_conversation_id_header_decides_the_conversation(proxy):
    named = ollama.Client(host=proxy.url, headers={"X-Conversation-Id": "ticket-42"})
    chat(named, ["Summarise ticket 42."])
    chat(named, ["Draft a reply to it."])  # a new history, the same conversation
    chat(ollama.Client(host=proxy.url), ["Unrelated."])
    proxy.flush()

    conversation = Conversation.objects.get(external_id="ticket-42")
    assert conversation.turns == 2
    assert conversation.user == "127.0.0.1"
    assert Conversation.objects.exclude(pk=conversation.pk).get().turns == 1


def test_a_v1_chat_from_the_openai_client_is_one_conversation(proxy):
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused")
    history = []
    for question in QUESTIONS[:3]:
        history.append({"role": "user", "content": question})
        reply = client.chat.completions.create(model="llama3.2", messages=history, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in reply if chunk.choices)
        history.append({"role": "assistant", "content": text})
    proxy.flush()

    conversation = Conversation.objects.get()
    messages = list(conversation.messages.order_by("id"))
    assert [message.endpoint for message in messages] == ["/v1/chat/completions"] * 3
    assert [message.history_turns for message in messages] == [None, 2, 4]
    assert full_history(messages[-1]) == history[:5]


def test_storage_grows_linearly_with_the_turns_of_a_conversation(proxy, capsys):
    """50 turns: the text stored (chat turns and prompt) against storing each whole history."""
    turns = 50
    history = chat(ollama.Client(host=proxy.url), [f"Question {n}: why?" for n in range(turns)])
    proxy.flush()

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, LENGTH(CAST(messages AS TEXT)), LENGTH(prompt) FROM proxy_message "
            "ORDER BY id"
        )
        sizes = [(messages, prompt) for _, messages, prompt in cursor.fetchall()]
    stored = [messages + prompt for messages, prompt in sizes]
    naive = [
        len(json.dumps(history[: 2 * n + 1], separators=(", ", ": ")))
        + len("\n\n".join(f"[{t['role']}]\n{t['content']}" for t in history[: 2 * n + 1]))
        for n in range(turns)
    ]
    with capsys.disabled():
        for upto in (10, 25, 50):
            print(
                f"\n{upto} turns: {sum(stored[:upto])} bytes stored, "
                f"{sum(naive[:upto])} bytes as whole histories",
                end="",
            )
        print()
    # Linear: the last turn stores no more than the first; the whole is a small part of naive.
    assert sizes[-1][0] <= sizes[0][0] + 10
    assert sum(stored) * 10 < sum(naive)
    last = Message.objects.latest("id")
    assert full_history(last) == history[:-1]


def test_turns_spooled_while_the_database_is_locked_are_grouped_when_replayed(
    proxy_settings, start_proxy, wait_until
):
    """A batch that fails after linking is spooled as it came (hashes kept, history whole)."""
    proxy_settings.RECORDER_DB_TIMEOUT = 0.2
    proxy = start_proxy()
    with database_locked():
        history = chat(ollama.Client(host=proxy.url), QUESTIONS[:3])
        proxy.flush()
        assert list(proxy_settings.RECORDER_SPOOL_DIR.glob("spool-*"))

    wait_until(lambda: Message.objects.count() == 3)
    conversation = Conversation.objects.get()
    messages = list(conversation.messages.order_by("timestamp"))
    assert [message.history_turns for message in messages] == [None, 2, 4]
    assert full_history(messages[-1]) == history[:5]
    assert uuid.UUID(str(messages[-1].previous_request_id)) == messages[1].request_id


def test_pruning_the_first_turns_leaves_the_later_ones_their_whole_history(proxy, tmp_path):
    history = chat(ollama.Client(host=proxy.url), QUESTIONS[:3])
    proxy.flush()
    first, second, third = Message.objects.order_by("id")
    cutoff = second.timestamp
    Message.objects.filter(pk=first.pk).update(timestamp=cutoff - timedelta(days=2))

    assert retention.prune(cutoff, tmp_path, batch_size=10) == {
        (cutoff - timedelta(days=2)).date(): 1
    }

    second.refresh_from_db()
    assert (second.previous_request_id, second.history_turns) == (None, None)
    assert second.messages == history[:3]
    assert second.prompt.startswith("[user]\nWhy is the sky blue?")
    third.refresh_from_db()
    assert full_history(third) == history[:5]  # still by reference, to the second turn
    archived = [
        row
        for _, row, _ in retention.read(
            tmp_path / retention.archive_name((cutoff - timedelta(days=2)).date())
        )
    ]
    assert archived[0]["request_id"] == first.request_id


def test_a_turn_written_before_the_one_it_continues_is_adopted_by_it(
    proxy_settings, start_proxy, wait_until, tmp_path
):
    """As when another worker writes the second turn first, or a spool replays late: once the
    first turn is written, the second joins its conversation and stores its new turn only."""
    proxy_settings.RECORDER_DB_TIMEOUT = 0.2
    proxy = start_proxy()
    recorder = proxy.forwarder.recorder
    with database_locked():
        history = chat(ollama.Client(host=proxy.url), QUESTIONS[:1])
        proxy.flush()
    [spooled] = proxy_settings.RECORDER_SPOOL_DIR.glob("spool-*")
    held = spooled.rename(tmp_path / spooled.name)  # the first turn, out of the way
    wait_until(lambda: not recorder._database_resting())
    history += chat(ollama.Client(host=proxy.url), QUESTIONS[1:2], history=history)
    proxy.flush()
    orphan = Message.objects.get()
    assert orphan.parent_hash is not None and orphan.history_turns is None

    held.rename(spooled)
    wait_until(lambda: Message.objects.count() == 2)

    first, second = Message.objects.order_by("timestamp")
    assert first.conversation_id == second.conversation_id
    assert (second.parent_hash, second.history_turns) == (None, 2)
    assert second.messages == [{"role": "user", "content": QUESTIONS[1]}]
    assert full_history(second) == history[:3]
    conversation = Conversation.objects.get()
    assert (conversation.turns, conversation.started_at) == (2, first.timestamp)


def test_a_history_is_the_same_whatever_shape_the_client_sends_it_back_in():
    """Tool calls come back with arguments as JSON text (OpenAI) or an object (Ollama) and a
    `type` the reply never had; thinking may be dropped. None of it starts a new history."""
    as_recorded = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "thinking": "I should call the tool.",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
    ]
    as_sent_back = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
    ]
    assert conversations.chain("alice", as_recorded) == conversations.chain("alice", as_sent_back)
    assert conversations.chain("alice", as_recorded) != conversations.chain("bob", as_recorded)
    as_sent_back[1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Lyon"}'
    assert (
        conversations.chain("alice", as_recorded)[1]
        != conversations.chain("alice", as_sent_back)[1]
    )
