"""What PII masking costs the recorder's writer per message, before and after its trigger checks.

    .venv/bin/python bench/masking.py [--rounds 7] [--only old|new --shape NAME --rows N]

In one process, no HTTP: rows shaped as `Exchange.to_fields` makes them (the prompt of a chat
is the text of its messages) go through `privacy.prepare` at the `full` record level with the
built-in kinds of PII_MASK and no admin rules, the writer's default. "old" is the masking before
(proxy/tests/masking_reference.py, the frozen copy the equivalence test compares against) and
"new" is proxy.privacy and proxy.masking now, alternating in the same run; both start with the
same `level_for`. Prints µs per row for each shape of row (best round of `--rounds`, each round
masking fresh copies), and checks that both paths stored the same rows.

`--only` runs one path on one shape, for `valgrind --tool=callgrind` (instruction counts are
steady on a busy machine where times are not): compare a run with `--rows N` against one with
`--rows 0`; `--only none` makes the copies of the rows and masks nothing, to subtract.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SKY = (
    "the sky looks blue because air molecules scatter the shorter wavelengths of sunlight "
    "more than the longer ones so blue light reaches your eyes from every direction while "
    "at sunset the light crosses more air and the reds remain"
)


def prose(words: int, start: int = 0) -> str:
    sky = SKY.split()
    text = " ".join(sky[(start + step) % len(sky)] for step in range(words))
    return text[0].upper() + text[1:] + "."


CODE = (
    "```python\nimport math\n\ndef area(radius: float) -> float:\n"
    "    return math.pi * radius ** 2\n\nprint(area(2.5))  # 19.63\n```\n"
)


def shapes() -> dict[str, list]:
    """Chat histories (turns), the reply, the endpoint: what a shape of row is made of."""
    question = {"role": "user", "content": prose(18)}
    system = {"role": "system", "content": "You are a terse assistant. Answer in plain text."}
    history = [system]
    for turn in range(5):
        history += [
            {"role": "user", "content": prose(20, turn)},
            {"role": "assistant", "content": prose(90, turn * 3)},
        ]
    tool_turns = [
        system,
        {"role": "user", "content": "What is the weather in Paris and in Lyon today?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_weather", "arguments": {"city": "Lyon"}}},
            ],
        },
        {"role": "tool", "content": '{"temperature": 21.5, "sky": "clear"}', "tool_name": "w"},
        {"role": "tool", "content": '{"temperature": 18, "sky": "cloudy"}', "tool_name": "w"},
    ]
    pii = {
        "role": "user",
        "content": "I am ada@example.com, card 4111 1111 1111 1111, from 192.168.1.20; "
        "my key is sk-proj-" + "A1b2C3d4" * 4 + ". Call me on +44 20 7946 0958.",
    }
    return {
        "short chat": ["/api/chat", [system, question], prose(60)],
        "long reply (code, numbers)": [
            "/api/chat",
            [question],
            (prose(150) + "\n\n" + CODE + "In 2024 it ran 1.5x faster on 8 cores.\n\n") * 4,
        ],
        "history of 10 turns": ["/api/chat", [*history, question], prose(120, 7)],
        "tool calls": ["/api/chat", tool_turns, "Paris: 21.5 °C and clear; Lyon: 18 °C."],
        "PII in the prompt": ["/api/chat", [system, pii], prose(60)],
        "generate": ["/api/generate", None, prose(120)],
    }


def row(endpoint: str, turns: list | None, reply: str) -> dict:
    """A row as `to_fields` makes it (the fields masking and `storable` look at, and the rest)."""
    from proxy.ollama import readable_turns

    return {
        "request_id": uuid.uuid4(),
        "endpoint": endpoint,
        "method": "POST",
        "model": "llama3.2",
        "stream": True,
        "status": "success",
        "user": "ada",
        "client_ip": "127.0.0.1",
        "user_agent": "ollama-python/0.6.0",
        "prompt": readable_turns(turns) if turns else prose(25),
        "messages": turns,
        "options": {"temperature": 0.2, "num_ctx": 8192},
        "response": reply,
        "thinking": "",
        "tool_calls": None,
        "done_reason": "stop",
        "error": "",
        "input_tokens": 60,
        "output_tokens": 150,
        "latency_seconds": 0.8,
    }


def setup() -> None:
    """Django on a throwaway SQLite database, the (empty) masking rules read once."""
    os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="bench-masking-")
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ollama_monitor.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from proxy import privacy

    call_command("migrate", verbosity=0)
    privacy.current()


def paths():
    from django.conf import settings

    from proxy import privacy
    from proxy.tests import masking_reference as reference

    old_masker = reference.Masker(settings.PII_MASK)

    def old(row: dict) -> None:
        privacy.level_for(row["endpoint"], row["model"])
        reference.prepare(row, old_masker)

    def new(row: dict) -> None:
        privacy.prepare(row, read_rules=False)

    return {"old": old, "new": new}


def time_path(prepare, rows: list[dict], repeat: int) -> tuple[float, list[dict]]:
    """µs per row, best of `repeat` rounds over fresh copies; the rows of the last round."""
    best = float("inf")
    for _ in range(repeat):
        batch = [copy.deepcopy(row) for row in rows]
        started = time.perf_counter()
        for item in batch:
            prepare(item)
        best = min(best, (time.perf_counter() - started) / len(batch) * 1e6)
    return best, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rows", type=int, default=200, help="Copies of each shape per round.")
    parser.add_argument("--only", choices=["old", "new", "none"])
    parser.add_argument("--shape", help="With --only: the shape's name.")
    args = parser.parse_args()
    setup()
    prepares = paths()
    prepares["none"] = lambda row: None
    made = {name: row(*parts) for name, parts in shapes().items()}
    if args.only:
        batch = [copy.deepcopy(made[args.shape]) for _ in range(args.rows)]
        prepares[args.only](copy.deepcopy(made[args.shape]))  # warm-up, also with --rows 0
        for item in batch:
            prepares[args.only](item)
        return

    print(f"{'row':<28} {'chars':>6} {'old µs':>8} {'new µs':>8} {'new/old':>8}")
    for name, item in made.items():
        rows = [item] * args.rows
        old, old_rows = time_path(prepares["old"], rows, args.rounds)
        new, new_rows = time_path(prepares["new"], rows, args.rounds)
        assert [_masked(r) for r in old_rows] == [_masked(r) for r in new_rows], name
        chars = sum(len(str(item[field] or "")) for field in ("prompt", "messages", "response"))
        print(f"{name:<28} {chars:>6} {old:>8.1f} {new:>8.1f} {new / old:>8.2f}")


def _masked(row: dict) -> dict:
    return {name: row[name] for name in ("prompt", "messages", "response", "tool_calls")}


if __name__ == "__main__":
    main()
