"""HTTP methods (HEAD wherever GET works, a truthful Allow on 405) and a POST body that never
arrives whole (too slow: 408; the client gone: 400, nothing judged, nothing granted)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.api.limits import BodyEndedEarlyError, LimitExceededError, Message, read_body
from app.settings_sections import LimitSettings
from tests.unit.hardening.env import PASSWORDS, Env, hardened_env

pytestmark = pytest.mark.anyio

FORM = (
    "grant_type=password&username=alice&password={}&service=registry.test"
    "&client_id=truncated&access_type=offline"
).format(PASSWORDS["alice"])


@pytest.fixture
async def env(tmp_path: Path, rsa_keys_dir: Path) -> AsyncIterator[Env]:
    async with hardened_env(tmp_path, rsa_keys_dir) as env:
        yield env


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/.well-known/jwks.json", "/metrics"])
async def test_head_works_wherever_get_does(env: Env, path: str) -> None:
    get, head = await env.client.get(path), await env.client.head(path)
    assert get.status_code == 200
    assert head.status_code == 200, head.text
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_a_wrong_method_on_the_token_path_lists_every_method_it_takes(
    env: Env, method: str
) -> None:
    response = await env.client.request(method, "/token")
    assert response.status_code == 405
    assert response.json()["error"] == "http"
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


def _receive(*messages: Message, then_wait: bool = False) -> Any:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then_wait:
            await asyncio.sleep(3600)  # a client that sends nothing more
        return {"type": "http.disconnect"}

    return receive


POST = {"type": "http", "method": "POST"}


async def test_a_body_that_stops_coming_is_a_408_after_the_timeout() -> None:
    limits = LimitSettings(header_timeout=0.2)
    part = {"type": "http.request", "body": b"grant_type=", "more_body": True}
    with pytest.raises(LimitExceededError) as refused:
        await read_body(POST, _receive(part, then_wait=True), limits)
    assert refused.value.status == 408
    assert b'"request_timeout"' in refused.value.body()
    assert "0.2 s" in refused.value.message


async def test_a_client_gone_before_its_body_ended_is_not_a_short_body() -> None:
    part = {"type": "http.request", "body": FORM.encode(), "more_body": True}
    with pytest.raises(BodyEndedEarlyError) as refused:
        await read_body(POST, _receive(part), LimitSettings())
    assert refused.value.status == 400


async def test_a_whole_body_in_pieces_is_read() -> None:
    pieces = [{"type": "http.request", "body": b"ab", "more_body": True},
              {"type": "http.request", "body": b"cd", "more_body": False}]  # fmt: skip
    assert await read_body(POST, _receive(*pieces), LimitSettings()) == b"abcd"


async def test_a_truncated_grant_is_neither_granted_nor_audited(env: Env) -> None:
    """Through the token layer, as a real server delivers it: the form's bytes, then the
    disconnect. Before, the truncated form was judged, and an offline grant issued a refresh
    token nobody received. The answer is a 400 (granian sent its own 500 when there was none;
    uvicorn drops it when the client is gone)."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    part = {"type": "http.request", "body": FORM.encode(), "more_body": True}
    scope = {
        "type": "http", "method": "POST", "path": "/token", "query_string": b"",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded"),
                    (b"content-length", str(len(FORM) + 50).encode())],
        "client": ("127.0.0.1", 40000),
    }  # fmt: skip
    await env.client._transport.app(scope, _receive(part), send)  # type: ignore[attr-defined]
    assert sent[0]["status"] == 400
    assert b"the request body ended early" in sent[1]["body"]
    assert env.audit() == []
    assert env.service.refresh_tokens is not None
    assert env.service.refresh_tokens.store.records() == []


async def test_raw_non_ascii_in_the_query_is_a_400_naming_the_query(env: Env) -> None:
    """granian hands such bytes on (uvicorn refuses them before the app)."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": "/token", "headers": [],
        "query_string": "service=registry.test&scope=repository:é/app:pull".encode(),
        "client": ("127.0.0.1", 40000),
    }  # fmt: skip
    await env.client._transport.app(scope, _receive(), send)  # type: ignore[attr-defined]
    assert sent[0]["status"] == 400
    assert b'"parameter":"query"' in sent[1]["body"]
    assert b"percent-encoded" in sent[1]["body"]


async def test_a_content_length_of_thousands_of_digits_is_a_413(env: Env) -> None:
    """int() of more than 4,300 digits raises: a 500, had a server passed such a length on."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/token", "query_string": b"",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded"),
                    (b"content-length", b"9" * 5000)],
        "client": ("127.0.0.1", 40000),
    }  # fmt: skip
    await env.client._transport.app(scope, _receive(), send)  # type: ignore[attr-defined]
    assert sent[0]["status"] == 413
    assert b"request body exceeds" in sent[1]["body"]
