"""A fault-injecting TCP proxy between the runner and the real server, for hang, retry and chaos tests.

    proxy = FaultProxy("127.0.0.1", 3306).start()   # listens on 127.0.0.1:proxy.port
    proxy.delay(0.5)     # every chunk, either way, is held 0.5 s before it is forwarded
    proxy.stall()        # forward nothing, on the connections open now and on new ones (which are still
                         # accepted and kept open): a server that accepts and never answers
    proxy.stall_open()   # one shot: the connections open now forward nothing more; new ones pass
    proxy.cut()          # close every open connection now, with a reset (RST); new ones pass
    proxy.pass_all()     # forward everything again, stalled connections included (the default mode)
    proxy.accepted       # connections accepted so far
    proxy.stop()         # close everything; bounded (each thread polls every 0.1 s)

A stalled connection reads nothing from either side, so the sender's buffers fill as on a dead network.
Modes switch at any moment, from any thread. The `proxied` fixture (tests/conftest.py) puts one in front of the
test server and gives settings that go through it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

_POLL = 0.1  # seconds: how often a waiting thread looks at the mode and at stop()
_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One client connection and its own connection to the server."""

    client: socket.socket
    server: socket.socket
    stalled: bool = False  # stall_open() stalls this one whatever the mode
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self, reset: bool = False) -> None:
        self.closed.set()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                if reset:  # linger 0: close sends RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()


class FaultProxy:
    """See the module's docstring."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._stalled = False
        self._delay = 0.0
        self.accepted = 0

    def start(self) -> FaultProxy:
        self._spawn(self._accept_loop)
        return self

    def pass_all(self) -> None:
        with self._lock:
            self._stalled, self._delay = False, 0.0
            for link in self._links:
                link.stalled = False

    def delay(self, seconds: float) -> None:
        with self._lock:
            self._stalled, self._delay = False, seconds

    def stall(self) -> None:
        with self._lock:
            self._stalled = True

    def stall_open(self) -> None:
        with self._lock:
            for link in self._links:
                link.stalled = True

    def cut(self) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close(reset=True)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()
        for thread in list(self._threads):
            thread.join(timeout=5 * _POLL + 1)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="faultproxy")  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _is_stalled(self, link: _Link) -> bool:
        with self._lock:
            return self._stalled or link.stalled

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed by stop()
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the server is down: so is the proxied address
                continue
            for sock in (client, server):
                sock.settimeout(_POLL)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
                self.accepted += 1
            self._spawn(self._pump, link, client, server)
            self._spawn(self._pump, link, server, client)

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        while not (self._stop.is_set() or link.closed.is_set()):
            if self._is_stalled(link):  # read nothing: the sender's buffers fill, as on a dead network
                time.sleep(_POLL)
                continue
            try:
                data = source.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if self._delay:
                time.sleep(self._delay)
            while self._is_stalled(link) and not (self._stop.is_set() or link.closed.is_set()):
                time.sleep(_POLL)  # stalled meanwhile: hold the chunk until it passes again
            if not self._send(link, sink, data):
                break
        link.close()
        with self._lock, contextlib.suppress(ValueError):
            self._links.remove(link)

    def _send(self, link: _Link, sink: socket.socket, data: bytes) -> bool:
        """All of `data`, however slowly the receiver reads (sendall would give up after one poll's timeout)."""
        view = memoryview(data)
        while view:
            if self._stop.is_set() or link.closed.is_set():
                return False
            try:
                view = view[sink.send(view) :]
            except TimeoutError:
                continue
            except OSError:
                return False
        return True
