"""Reading /metrics in the security tests: how many requests were counted with some labels."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def requests_counted(url: str, **labels: str) -> float:
    """The sum of ollama_requests_total over the samples that carry these labels."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(scrape(url))
        for sample in family.samples
        if sample.name == "ollama_requests_total" and labels.items() <= sample.labels.items()
    )
