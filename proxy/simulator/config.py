"""The simulator's server-wide settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimulatorConfig:
    """Server-wide settings; every field can be overridden per request by a knob."""

    host: str = "127.0.0.1"
    port: int = 11434
    tokens_per_second: float = 50.0
    ttft: float = 0.05
    default_tokens: int = 24
    max_parallel: int = 0
    max_queue: int = 512
    version: str = "0.33.0"
    # Installed model names (None = every built-in model). Others can be pulled.
    models: tuple[str, ...] | None = None
    # A hosted OpenAI-compatible API instead of Ollama: only /v1/* is served.
    openai_only: bool = False
    # Non-empty: /v1/* answers 401 unless "Authorization: Bearer <api_key>".
    api_key: str = ""
