"""``python -m proxy.simulator --port 11434``: serve the simulated Ollama in the foreground."""

from .server import main

main()
