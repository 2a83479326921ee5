"""
A TCP relay on 127.0.0.1 that counts the HTTP requests passing through it
(method and path of each), so tests can count what cacheprog asks of a
store.  Threads, blocking sockets: test code only.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.integration.servers import LOCALHOST


class CountingRelay:
    """
    Forwards every connection to C{upstream} (host, port) and records each
    request line seen on the way up (requests with C{Content-Length} bodies;
    cacheprog sends no chunked bodies).
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def seen(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for s in list(self._sockets):
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _shut(sink)

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        buffer = b""
        body_left = 0
        try:
            while data := client.recv(65536):
                server.sendall(data)
                buffer += data
                while True:
                    if body_left:
                        taken = min(body_left, len(buffer))
                        buffer, body_left = buffer[taken:], body_left - taken
                        if body_left:
                            break
                    head, sep, rest = buffer.partition(b"\r\n\r\n")
                    if not sep:
                        break
                    lines = head.decode("latin-1").split("\r\n")
                    method, path = ([*lines[0].split(" "), "", ""])[:2]
                    with self._lock:
                        self.requests.append((method, path))
                    body_left = _content_length(lines[1:])
                    buffer = rest
        except OSError:
            pass
        finally:
            _shut(server)


def _content_length(headers: list[str]) -> int:
    for line in headers:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip() or 0)
    return 0


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@contextmanager
def counting_relay(endpoint: str) -> Iterator[CountingRelay]:
    """
    A relay in front of C{endpoint} (C{http://host:port}) for a block.
    """
    host, _, port = endpoint.split("://", 1)[1].rstrip("/").partition(":")
    relay = CountingRelay((host, int(port)))
    try:
        yield relay
    finally:
        relay.close()
