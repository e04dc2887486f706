"""A request read timeout for uvicorn, against clients that send a request very slowly.

uvicorn has a keep-alive timeout (idle between requests) but no limit on how long a client may
take to send one request: a client dripping a byte every few seconds holds a connection, and
enough of them hold them all (slowloris). This protocol arms a timer when a connection opens
and when the first bytes of a later request arrive, and disarms it once the request's headers
are in; when it fires the client gets 408 and the connection is closed. The body then has the
same time again, bounded in the app for both servers (app/api/limits.py, read_body), and the
idle time between two requests is uvicorn's keep-alive timeout: neither counts here.

Only for uvicorn's h11 protocol. granian bounds the headers itself (its header read
timeout).
The protocol also answers what h11 refuses (a missing or second Host, a bad header line or
chunk) in JSON naming the problem, as the app answers, instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
import sys

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.api.limits import HOST_REFUSAL

_BODY = json.dumps(
    {"details": "the request was not sent in time", "error": "request_timeout"}
).encode("ascii")
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode("ascii") + b"\r\n\r\n" + _BODY
)
# Our side before any answer: IDLE while the headers arrive, SEND_RESPONSE once they are in.
_NOT_ANSWERED = (h11.IDLE, h11.SEND_RESPONSE)


class RequestTimeoutProtocol(H11Protocol):
    request_timeout: float = 10.0
    _request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._unbounded():
            self._disarm()
        elif self._request_timer is None and not self.transport.is_closing():
            self._arm()  # the first bytes of a request after an earlier one

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A body still coming that nobody reads now, or the next request (pipelined) begun.
        if not self.transport.is_closing() and (
            self.conn.their_state is h11.SEND_BODY
            or (self.conn.their_state is h11.IDLE and self.conn.trailing_data[0])
        ):
            self._arm()

    def _unbounded(self) -> bool:
        """Whether the client is sending what no other timer bounds: a request's headers, or a
        body that the app is not reading (it has begun its answer: a GET with a body)."""
        their = self.conn.their_state
        return their is h11.IDLE or (
            their is h11.SEND_BODY and self.conn.our_state is not h11.SEND_RESPONSE
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this from its `except h11.RemoteProtocolError`: that error is the one
        # being handled, and says what was wrong.
        problem = str(sys.exception() or msg)
        if "Host" in problem:  # h11: "Missing mandatory Host: header", "Found multiple ..."
            body = {"details": HOST_REFUSAL, "error": "invalid_request", "parameter": "Host"}
        else:  # without the client's bytes h11 quotes ("illegal header line: bytearray(...)")
            text = problem.partition(": bytearray(")[0]
            body = {
                "details": f"the request is not valid HTTP/1.1: {text}",
                "error": "invalid_request",
            }
        data = json.dumps(body).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode("ascii")),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=data),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._request_timer = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _expired(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        if self.conn.our_state in _NOT_ANSWERED:  # no answer begun: the 408 is the answer
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def request_timeout_protocol(seconds: float) -> type[RequestTimeoutProtocol]:
    """The protocol class for uvicorn's `http=` option, with this timeout."""
    return type("RequestTimeoutProtocol", (RequestTimeoutProtocol,), {"request_timeout": seconds})
