"""A real broker behind a Kafka-protocol-aware TCP proxy that can refuse writes to one topic.

tansu creates topics on demand and has no ACLs, so "the dead-letter topic refuses writes" is
made the way a network or an ACL would: the broker advertises the proxy, every client talks
through it, and while ``refuse`` names a topic, a Produce request for that topic drops the
connection (the producer sees the error and retries, then fails). Everything else passes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

from daemon.ingest.broker import broker_binary, free_port

PRODUCE = 0


class KafkaGate:
    def __init__(self) -> None:
        self.broker_port = free_port()
        self.port = free_port()
        self.refuse: str | None = None
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> KafkaGate:
        self._process = subprocess.Popen(
            [broker_binary(), "broker",
             "--listener-url", f"tcp://127.0.0.1:{self.broker_port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.broker_port), 0.2):
                break
            time.sleep(0.02)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.broker_port))
            except OSError:  # the broker is stopping
                client.close()
                continue
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to broker, one framed request at a time, so each can be judged."""
        try:
            while True:
                head = _read(client, 4)
                body = _read(client, struct.unpack(">i", head)[0])
                (api_key,) = struct.unpack(">h", body[:2])
                if (api_key == PRODUCE and self.refuse is not None
                        and self.refuse.encode() in body):
                    self.refused += 1
                    break
                upstream.sendall(head + body)
        except OSError:
            pass
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _read(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            raise OSError("closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(1 << 16):
            dst.sendall(chunk)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def kafka_gate() -> Iterator[KafkaGate]:
    gate = KafkaGate().start()
    try:
        yield gate
    finally:
        gate.stop()
