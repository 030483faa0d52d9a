"""From what the hot path noted to a message's fields: status derived from what happened."""

from proxy.exchange import Exchange

COMPLETE_SSE = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def exchange_with(reply: bytes, *, cancelled: bool) -> dict:
    exchange = Exchange("POST", "/v1/chat/completions", "127.0.0.1", {})
    exchange.request_body = b'{"model":"llama3.2","messages":[],"stream":true}'
    exchange.http_status = 200
    exchange.content_type = "text/event-stream"
    exchange.keep(reply)
    exchange.cancelled = cancelled
    return exchange.to_fields()


def test_a_client_that_hangs_up_after_the_complete_answer_succeeded():
    assert exchange_with(COMPLETE_SSE, cancelled=True)["status"] == "success"


def test_a_client_that_hangs_up_before_the_end_cancelled():
    partial = COMPLETE_SSE.split(b"\n\n")[0] + b"\n\n"

    fields = exchange_with(partial, cancelled=True)

    assert fields["status"] == "cancelled"
    assert fields["response"] == "Hi"
