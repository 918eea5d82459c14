"""Helpers for the upload-service tests and bench/upload.py.

``UploadServer.start`` runs the real ``vidpipe serve`` in its own process
(port 0: it prints the port it got) and waits for it. ``http`` speaks plain
``http.client``, so the bytes on the wire are exactly the ones a test wrote.
``KillProxy`` sits between a client process and the server and SIGKILLs the
client once a chosen number of request bytes went through it, cutting the
connection at exactly that byte.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client as httpc
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
TUS_JS = REPO / "tests" / "tus"
TOKEN = "test-token-0123456789abcdef"
V = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(**values: str) -> str:
    return ",".join(f"{k} {b64(v)}" for k, v in values.items())


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | Iterable[bytes] | None = None,
    timeout: float = 60,
) -> Reply:
    """One request on a fresh connection; ``body`` may be an iterable (sent chunked
    unless ``headers`` has a Content-Length)."""
    parts = urlsplit(url)
    conn = httpc.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        hdrs = dict(headers or {})
        if isinstance(body, bytes | bytearray):
            conn.request(method, path, body=body, headers=hdrs)
        elif body is None:
            conn.request(method, path, headers=hdrs)
        else:
            chunked = not any(k.lower() == "content-length" for k in hdrs)
            conn.request(method, path, body=body, headers=hdrs, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


@dataclass
class UploadServer:
    proc: subprocess.Popen[str]
    base: str  # http://127.0.0.1:PORT
    data_dir: Path
    log: Path
    token: str | None = None

    @property
    def files(self) -> str:
        return f"{self.base}/files/"

    def auth(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        out = dict(headers or {})
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        return out

    def call(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
    ) -> Reply:
        return http(method, url if "://" in url else self.base + url, self.auth(headers), body)

    def create(self, length: int | None, meta: str | None = None, **headers: str) -> str:
        hdrs = dict(V)
        if length is None:
            hdrs["Upload-Defer-Length"] = "1"
        else:
            hdrs["Upload-Length"] = str(length)
        if meta is not None:
            hdrs["Upload-Metadata"] = meta
        hdrs |= {k.replace("_", "-"): v for k, v in headers.items()}
        reply = self.call("POST", self.files, hdrs)
        assert reply.status == 201, (reply.status, reply.body)
        location = reply.header("location")
        assert location
        return location

    def patch(self, url: str, offset: int, data: bytes, **headers: str) -> Reply:
        hdrs = OCTETS | {"Upload-Offset": str(offset)}
        hdrs |= {k.replace("_", "-"): v for k, v in headers.items()}
        return self.call("PATCH", url, hdrs, data)

    def offset(self, url: str) -> int:
        reply = self.call("HEAD", url, V)
        assert reply.status == 200, reply.status
        return int(reply.header("upload-offset") or -1)

    def status(self, url: str) -> dict[str, Any]:
        reply = self.call("GET", url)
        assert reply.status == 200, (reply.status, reply.body)
        return dict(reply.json())

    def wait_status(self, url: str, want: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.status(url)
            if got["status"] == want or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def peak_rss_mib(self) -> float:
        """The server process's peak resident set (VmHWM), from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    @classmethod
    def start(
        cls,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        token: str | None = None,
        timeout: float = 120,
    ) -> UploadServer:
        data_dir.mkdir(parents=True, exist_ok=True)
        log = data_dir / f"serve-{time.monotonic_ns()}.log"
        full_env = dict(os.environ) | {"VIDPIPE_UPLOAD__DISPATCH": "none"} | dict(env or {})
        if token:
            full_env["VIDPIPE_UPLOAD__TOKEN"] = token
        err: IO[str] = log.open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidpipe.flows.cli", "serve", "--port", "0",
             "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=err, text=True, env=full_env, cwd=REPO,
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(f"vidpipe serve did not start:\n{log.read_text()}") from None
                continue
            if line.startswith("listening on "):
                base = line.split()[2].removesuffix("/files/")
                return cls(proc, base, data_dir, log, token)


# ---------------------------------------------------------------- killing clients


@dataclass
class KillProxy:
    """A TCP proxy to ``target``; once armed, it lets ``budget`` client bytes through,
    then calls ``on_trip`` (which kills the client) and cuts every connection."""

    target: tuple[str, int]
    listener: socket.socket = field(init=False)
    budget: int | None = None
    on_trip: Callable[[], None] | None = None
    tripped: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: set[socket.socket] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def arm(self, budget: int, on_trip: Callable[[], None]) -> None:
        with self._lock:
            self.budget, self.on_trip = budget, on_trip
            self.tripped.clear()

    def disarm(self) -> None:
        with self._lock:
            self.budget, self.on_trip = None, None

    def close(self) -> None:
        self.listener.close()
        self._cut()

    def _cut(self) -> None:
        for s in list(self._open):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._open.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._open |= {client, upstream}
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    if self.budget is not None:
                        if len(data) >= self.budget:
                            upstream.sendall(data[: self.budget])
                            self.budget = 0
                            trip = self.on_trip
                            self.budget, self.on_trip = None, None
                            if trip:
                                trip()
                            self.tripped.set()
                            self._cut()
                            return
                        self.budget -= len(data)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                self._open.discard(s)

    def _down(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)


class PausedPatch:
    """A PATCH sent by hand whose body stops after ``first`` bytes until ``finish``
    (or ``drop``, a disconnect). Meanwhile it holds the upload's lock."""

    def __init__(
        self, server: UploadServer, url: str, offset: int, data: bytes, first: int,
        extra: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        parts = urlsplit(url)
        self.data, self.first = data, first
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
        headers = server.auth(OCTETS | {"Upload-Offset": str(offset)} | dict(extra or {}))
        headers |= {"Host": parts.netloc, "Content-Length": str(len(data))}
        head = f"PATCH {parts.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        self.sock.sendall(head.encode() + b"\r\n" + data[:first])

    def finish(self) -> Reply:
        self.sock.sendall(self.data[self.first :])
        resp = httpc.HTTPResponse(self.sock)
        resp.begin()
        body = resp.read()
        self.sock.close()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)

    def drop(self) -> None:
        self.sock.close()


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------- real clients

# tuspy as an application uses it: store_url with tinydb, a sha1 checksum on every PATCH.
TUSPY = r"""
import hashlib, json, os, sys
from tusclient import client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

class WrongChecksum(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha1", lambda data: hashlib.sha1(b"not " + data))

opts = json.loads(sys.argv[1])
say = lambda **kw: print(json.dumps(kw), flush=True)
say(event="start", pid=os.getpid())
try:
    storage = FileStorage(opts["storage"]) if opts.get("storage") else None
    kind = WrongChecksum if opts.get("bad_checksum") else Uploader
    up = kind(
        file_path=opts["file"], url=opts.get("url"), client=client.TusClient(opts["endpoint"]),
        chunk_size=opts.get("chunk", 512 * 1024), metadata=opts.get("metadata", {}),
        store_url=storage is not None, url_storage=storage, upload_checksum=True,
        retries=opts.get("retries", 8), retry_delay=0.25,
    )
    if up.url:
        say(event="resume", url=up.url, offset=up.offset)
    if opts.get("bad_offset"):
        up.set_url(up.create_url())
        up.offset = 1
        up.upload_chunk()
    up.upload(stop_at=opts.get("stop_at"))
    say(event="success", url=up.url, offset=up.offset)
except (TusCommunicationError, TusUploadFailed) as exc:
    say(event="error", status=exc.status_code, message=str(exc))
    sys.exit(1)
"""


def client_argv(kind: str, script: Path | None, opts: dict[str, Any]) -> list[str]:
    if kind == "tuspy":
        return [sys.executable, "-c", TUSPY, json.dumps(opts)]
    assert script is not None
    return ["node", str(script), json.dumps(opts)]


def run_client(argv: list[str], timeout: float = 120) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert events, f"client printed nothing ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.returncode, events


def client_opts(kind: str, file: Path, endpoint: str | None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"file": str(file), "endpoint": endpoint}
    if kind == "tuspy":
        return base | {"chunk": 512 * 1024} | extra
    return base | {"chunkSize": 512 * 1024} | extra


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, rng: random.Random, size: int) -> Path:
    path.write_bytes(rng.randbytes(size))
    return path


def prefect_events(api: str, sha256: str) -> list[dict[str, Any]]:
    query = {
        "filter": {
            "event": {"name": ["vidpipe.upload.completed"]},
            "resource": {"id": [f"vidpipe.video.{sha256}"]},
        },
        "limit": 50,
    }
    req = urllib.request.Request(f"{api}/events/filter", data=json.dumps(query).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return list(json.loads(resp.read())["events"])


def run_killed(proxy: KillProxy, budget: int, argv: list[str], timeout: float = 120) -> int:
    """Run a client through ``proxy``, SIGKILLed after ``budget`` request bytes; its
    return code (``-SIGKILL`` when the cut came in time)."""
    pid: list[int] = []
    started = threading.Event()

    def kill() -> None:
        started.wait(10)
        os.kill(pid[0], signal.SIGKILL)

    proxy.arm(budget, kill)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid.append(proc.pid)
        started.set()
        return proc.wait(timeout=timeout)
    finally:
        proxy.disarm()
