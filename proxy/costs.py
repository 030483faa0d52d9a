"""What a message costs, from the admin-editable price table (`ModelPrice`).

Computed by the recorder's writer thread, never on a stream. The table is read at most every
`RELOAD_SECONDS` per process (a change in this process applies at once), so a batch costs no
extra query.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .models import ModelPrice
from .tablecache import TableCache

RELOAD_SECONDS = 30.0


@dataclass(frozen=True)
class Price:
    pattern: str
    backend: str
    input_usd_per_token: float
    output_usd_per_token: float
    usd_per_second: float

    def cost_usd(self, fields: dict) -> float:
        seconds = fields.get("total_duration_seconds")
        if seconds is None:
            seconds = fields.get("latency_seconds") or 0.0
        return (
            (fields.get("input_tokens") or 0) * self.input_usd_per_token
            + (fields.get("output_tokens") or 0) * self.output_usd_per_token
            + seconds * self.usd_per_second
        )


class PriceBook:
    """The enabled prices in the order they are tried: priority, then one naming the backend
    before one for any backend (the same model costs differently hosted and local), then the
    longer pattern."""

    def __init__(self, prices: list[ModelPrice]):
        ordered = sorted(
            (price for price in prices if price.enabled),
            key=lambda price: (
                price.priority,
                not price.backend,
                -len(price.model_pattern),
                price.model_pattern,
            ),
        )
        self.prices = [
            Price(
                pattern=price.model_pattern.lower(),
                backend=price.backend,
                input_usd_per_token=float(price.input_usd_per_million) / 1e6,
                output_usd_per_token=float(price.output_usd_per_million) / 1e6,
                usd_per_second=float(price.usd_per_second),
            )
            for price in ordered
        ]
        self.by_model: dict[tuple[str, str], Price | None] = {}

    def price_for(self, model: str, backend: str = "") -> Price | None:
        try:
            return self.by_model[model, backend]
        except KeyError:
            pass
        name = model.lower()
        found = next(
            (
                p
                for p in self.prices
                if p.backend in {"", backend} and fnmatch.fnmatchcase(name, p.pattern)
            ),
            None,
        )
        if len(self.by_model) < 10_000:  # a client can send any model name
            self.by_model[model, backend] = found
        return found

    def cost_usd(self, fields: dict) -> float | None:
        """The cost of a message's fields; None when no price covers its model on its backend."""
        price = self.price_for(fields.get("model") or "", fields.get("backend") or "")
        return None if price is None else price.cost_usd(fields)


PRICES = TableCache(ModelPrice, lambda: PriceBook(list(ModelPrice.objects.all())), RELOAD_SECONDS)
current = PRICES.current
forget = PRICES.forget
