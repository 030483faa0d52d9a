"""What grouping chats into conversations costs the recorder's writer, per chat message.

    DATA_DIR=/tmp/bench-conversations .venv/bin/python bench/conversations.py [--chats 400]
        [--turns 10] [--batch 64]

Run against a freshly migrated database (the one DATABASE_URL or DATA_DIR names): in-process,
no HTTP, `--chats` chats of `--turns` turns each are written turn by turn in batches as the
writer writes them: `conversations.fingerprint` per row, then in one transaction
`conversations.link`, the message insert and the rollups. Prints the writer thread's CPU time
per message for each part (CPU, not wall: on a shared machine the wall time mostly measures
the neighbours) and checks that every chat became one conversation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ollama_monitor.settings")

import django

django.setup()

from django.db import transaction  # noqa: E402

from proxy import conversations, inserts, rollups  # noqa: E402
from proxy.models import Conversation  # noqa: E402

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def chats(count: int, turns: int) -> list[dict]:
    """The rows of `count` chats, turn by turn (each turn after every chat's previous one)."""
    histories: list[list[dict]] = [[] for _ in range(count)]
    rows = []
    for turn in range(turns):
        for number, history in enumerate(histories):
            history.append({"role": "user", "content": f"chat {number} question {turn}: why?"})
            reply = f"answer {number}/{turn} " + "because. " * 40
            rows.append(
                {
                    "request_id": uuid.uuid4(),
                    "timestamp": T0 + timedelta(milliseconds=len(rows)),
                    "endpoint": "/api/chat",
                    "model": "llama3.2",
                    "status": "success",
                    "http_status": 200,
                    "user": f"user{number % 50}",
                    "prompt": "",
                    "messages": [dict(entry) for entry in history],
                    "response": reply,
                    "input_tokens": 10,
                    "output_tokens": 20,
                    "latency_seconds": 0.5,
                    "cost_usd": 0.0,
                    "category": "",
                    "stream": True,
                }
            )
            history.append({"role": "assistant", "content": reply})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=400)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    options = parser.parse_args()
    rows = chats(options.chats, options.turns)
    hashing = linking = inserting = 0.0
    for start in range(0, len(rows), options.batch):
        batch = rows[start : start + options.batch]
        began = time.thread_time()
        for row in batch:
            conversations.fingerprint(row, {})
        hashing += time.thread_time() - began
        with transaction.atomic():
            began = time.thread_time()
            conversations.link(batch)
            linking += time.thread_time() - began
            began = time.thread_time()
            inserts.insert_messages(batch)
            rollups.add(batch)
            inserting += time.thread_time() - began
    per_row = 1e6 / len(rows)
    print(
        f"{len(rows)} chat messages ({options.chats} chats x {options.turns} turns), "
        f"batches of {options.batch}; writer CPU per message: hashing {hashing * per_row:.0f} "
        f"us, linking {linking * per_row:.0f} us, insert and rollups {inserting * per_row:.0f} us"
    )
    grouped = Conversation.objects.count()
    print(f"conversations: {grouped} (expected {options.chats})")


if __name__ == "__main__":
    main()
