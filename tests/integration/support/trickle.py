"""A TCP proxy on loopback that can hand a server's answers on one byte at a time.

Put in front of a real server (slapd), it shows what a client does with a server that keeps
answering, but too slowly to ever finish: every read gets a byte before its timeout runs out.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class TrickleProxy:
    def __init__(self, upstream: tuple[str, int], delay: float = 0.2) -> None:
        self.upstream = upstream
        self.delay = delay
        self.trickling = threading.Event()  # set: the server's bytes go on one by one
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> TrickleProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self.trickling.is_set():
                    for index in range(len(data)):
                        time.sleep(self.delay)
                        sink.sendall(data[index : index + 1])
                else:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
