"""`manage.py demo`: a simulated Ollama, the proxy in front of it, and traffic to look at."""

import threading

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand

from proxy.models import Message
from proxy.serving import ThreadedServer
from proxy.simulator import RunningSimulator

CHAT = [{"role": "user", "content": "Why is the sky blue?"}]


def traffic(url: str) -> list[tuple[str, str, dict]]:
    """One of each kind of exchange the proxy records (method, path, body)."""
    return [
        ("POST", "/api/chat", {"model": "llama3.2", "messages": CHAT}),
        ("POST", "/api/chat", {"model": "llama3.2", "messages": CHAT, "stream": False}),
        ("POST", "/api/chat", {"model": "qwen3", "messages": CHAT, "think": True}),
        ("POST", "/api/generate", {"model": "llama3.2", "prompt": "Write a haiku about GPUs"}),
        ("POST", "/api/embed", {"model": "all-minilm", "input": ["first", "second"]}),
        (
            "POST",
            "/v1/chat/completions",
            {
                "model": "llama3.2",
                "messages": CHAT,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        ("POST", "/v1/completions", {"model": "llama3.2", "prompt": "Once upon a time"}),
        ("POST", "/api/chat", {"model": "no-such-model", "messages": CHAT}),
        ("GET", "/api/tags", {}),
    ]


class Command(BaseCommand):
    help = "Start a simulated Ollama and the proxy, send some traffic, and keep serving."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.PROXY_PORT)
        parser.add_argument("--rounds", type=int, default=3, help="times to send the traffic")
        parser.add_argument("--tokens-per-second", type=float, default=60.0)
        parser.add_argument("--no-wait", action="store_true", help="exit after the traffic")

    def handle(self, *args, port, rounds, tokens_per_second, no_wait, **options):
        with RunningSimulator(port=0, tokens_per_second=tokens_per_second, ttft=0.1) as sim:
            settings.OLLAMA_URL = sim.url
            server = ThreadedServer(port=port).start()
            self.stdout.write(f"simulated Ollama at {sim.url}, proxy at {server.url}")
            before = Message.objects.count()
            with httpx.Client(base_url=server.url, timeout=60) as client:
                for _ in range(rounds):
                    for method, path, body in traffic(server.url):
                        response = client.request(method, path, json=body or None)
                        self.stdout.write(f"  {method} {path} -> {response.status_code}")
            server.flush()
            recorded = Message.objects.order_by("id")[before:]
            self.stdout.write(f"\nrecorded {len(recorded)} messages:")
            for message in recorded:
                self.stdout.write(
                    f"  {message.endpoint:<22} {message.model:<14} {message.status:<9}"
                    f" in={message.input_tokens or 0:<4} out={message.output_tokens or 0:<4}"
                    f" latency={message.latency_seconds:.3f}s ttft={message.ttft_seconds or 0:.3f}s"
                )
            if no_wait:
                server.stop()
                return
            self.stdout.write(
                f"\nOpen {server.url}/admin/ (create a user with `manage.py createsuperuser`);"
                f" point clients at {server.url}. Ctrl-C stops."
            )
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
            finally:
                server.stop()
