"""HTTP proxies on 127.0.0.1 in front of a real S3 server.

``Gate`` puts concurrent multipart completions in a chosen order, so a race between two writers
happens the same way every time. It reads one request per connection, forwards it on a new
connection to the server, and relays the answer with ``Connection: close``. With
``hold_completes=2`` it lets no CompleteMultipartUpload through until two have arrived (so both
writers have passed every check they make before completing), then forwards them one after the
other, and holds every other request that arrives meanwhile until both are answered (so the
first writer's HEAD after its complete sees the second writer's object). With ``head_between``,
one HEAD (the first writer's look after completing) is let through between the two completes,
and everything else still waits: the second complete then lands after that look, before the
first writer's next request.

``KeepAliveProxy`` keeps its clients' connections open, and closes them where a test wants.

``Hold`` keeps chosen requests from the server until the test decides their fate, so that the
daemon is known to be inside the requests that sent them (a crash or a signal then hits it there).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def is_complete(self) -> bool:
        return self.line.startswith(b"POST ") and b"uploadId=" in self.line

    @property
    def is_head(self) -> bool:
        return self.head.startswith(b"HEAD ")


@dataclass
class Listener:
    """A server socket on 127.0.0.1 that serves each connection in a thread of its own."""

    upstream_port: int
    connections: int = 0  # accepted so far
    _sock: socket.socket = field(default_factory=socket.socket)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1  # only this thread writes it
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError


@dataclass
class Gate(Listener):
    hold_completes: int = 0
    head_between: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _waiting: int = 0
    _turn: int = 0  # completes forwarded so far
    _ordering: bool = False  # completes are being forwarded one by one: everything else waits
    _head_wanted: bool = False  # head_between: a complete was answered, the next waits for a HEAD
    completes: int = 0

    def _serve(self, client: socket.socket) -> None:
        with client:
            request = read_request(client)
            if request is None:
                return
            if request.is_complete and self.hold_completes:
                self._forward_in_order(client, request)
            elif request.is_head and self._let_head_between():
                forward(client, request, self.upstream_port)
                with self._cond:
                    self._head_wanted = False
                    self._cond.notify_all()
            else:
                with self._cond:
                    self._cond.wait_for(lambda: not self._ordering, timeout=60)
                forward(client, request, self.upstream_port)

    def _let_head_between(self) -> bool:
        """Whether this HEAD is the one to pass between two completes (it waits until then)."""
        with self._cond:
            if not (self.head_between and (self._ordering or self._waiting)):
                return False
            return self._cond.wait_for(lambda: self._head_wanted or not self._ordering, timeout=60) \
                and self._head_wanted

    def _forward_in_order(self, client: socket.socket, request: Request) -> None:
        with self._cond:
            ticket = self._waiting
            self._waiting += 1
            self.completes += 1
            if self._waiting == self.hold_completes:
                self._ordering = True
                self._cond.notify_all()
            self._cond.wait_for(lambda: self._ordering and self._turn == ticket and not self._head_wanted,
                                timeout=60)
        try:
            forward(client, request, self.upstream_port)
        finally:
            with self._cond:
                self._turn += 1
                if self._turn == self._waiting:
                    self._ordering = False
                    self.hold_completes = 0  # one race per gate
                elif self.head_between:
                    self._head_wanted = True
                self._cond.notify_all()


@dataclass
class Held:
    """The first ``count`` requests whose request line matches ``pattern``: they wait (``arrived``
    is set once all have come) until ``release``. ``release(to_store=True)`` forwards them, so the
    store acts on them even if their sender is gone by then (an answer goes to whoever still
    listens); ``to_store=False`` closes their connections unanswered, so the store never sees
    them. Either way ``release`` returns once that is done. Later matches pass, so a retry is not
    held."""

    pattern: re.Pattern[bytes]
    count: int
    arrived: threading.Event = field(default_factory=threading.Event)
    taken: int = 0  # guarded by the Hold's lock
    _decided: threading.Event = field(default_factory=threading.Event)
    _to_store: bool = False
    _settled: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def release(self, *, to_store: bool) -> None:
        assert self.arrived.is_set(), "not everything to hold has arrived"
        self._to_store = to_store
        self._decided.set()
        for _ in range(self.count):
            assert self._settled.acquire(timeout=60), "a held request was not settled"

    def settle(self, client: socket.socket, request: Request, port: int) -> None:
        try:
            if self._decided.wait(60) and self._to_store:
                answer = answer_of(request, port)
                with contextlib.suppress(OSError):  # its sender may be dead: the point of the test
                    client.sendall(with_answer_connection(answer, b"close"))
        finally:
            self._settled.release()


@dataclass
class Hold(Listener):
    """Forwards every request as ``Gate`` does (one per connection), except those a ``Held``
    asked for with ``hold``: the test decides their fate."""

    _holds: list[Held] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, pattern: bytes, count: int = 1) -> Held:
        held = Held(re.compile(pattern), count)
        with self._lock:
            self._holds.append(held)
        return held

    def _serve(self, client: socket.socket) -> None:
        with client:
            request = read_request(client)
            if request is None:
                return
            held = self._taker(request)
            if held is None:
                forward(client, request, self.upstream_port)
            else:
                held.settle(client, request, self.upstream_port)

    def _taker(self, request: Request) -> Held | None:
        """The Held that takes this request, if any."""
        with self._lock:
            for held in self._holds:
                if held.taken < held.count and held.pattern.match(request.line):
                    held.taken += 1
                    if held.taken == held.count:
                        held.arrived.set()
                    return held
        return None


def read_request(sock: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Request(head + b"\r\n\r\n", body)


def forward(client: socket.socket, request: Request, port: int) -> None:
    """Relay the server's answer, saying the connection closes after it: it serves one request."""
    client.sendall(with_answer_connection(answer_of(request, port), b"close"))


@dataclass
class KeepAliveProxy(Listener):
    """An HTTP/1.1 proxy on 127.0.0.1 that keeps its clients' connections open (moto closes
    every one), so a client's reuse of a connection, and its handling of one the server closed,
    can be seen and provoked.

    Each request is forwarded on a new connection to the server; its answer goes back with
    ``Connection: keep-alive``. ``drop`` holds numbers of requests (counted from 1 over all
    connections) that are read and then answered by closing the connection, as a server whose
    idle timer fired just as the request arrived. With ``close_after_answer``, a connection is
    closed right after answering a request that arrived while it was set, without a word, as a
    server that times out idle connections at once.
    """

    drop: set[int] = field(default_factory=set)
    close_after_answer: bool = False
    requests: list[bytes] = field(default_factory=list)  # request lines, in arrival order
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _serve(self, client: socket.socket) -> None:
        with client:
            while request := read_request(client):
                with self._lock:
                    self.requests.append(request.line)
                    number = len(self.requests)
                    # Decided now, not after the answer: once the client has it, the test may
                    # change the setting for the next request before this thread looks again.
                    last = self.close_after_answer
                if number in self.drop:
                    return
                client.sendall(with_answer_connection(answer_of(request, self.upstream_port), b"keep-alive"))
                if last:
                    return


def answer_of(request: Request, port: int) -> bytes:
    """The server's whole answer to ``request``, asked for on a connection that it then closes."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as upstream:
        upstream.sendall(with_connection(request.head, b"close") + request.body)
        while chunk := upstream.recv(65536):
            out += chunk
    return out


def with_answer_connection(answer: bytes, value: bytes) -> bytes:
    head, _, body = answer.partition(b"\r\n\r\n")
    return with_connection(head + b"\r\n\r\n", value) + body


def with_connection(head: bytes, value: bytes) -> bytes:
    """A request's or an answer's head (ending in a blank line) with this Connection header; no
    signature covers it."""
    lines = [line for line in head[:-4].split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: " + value]) + b"\r\n\r\n"
