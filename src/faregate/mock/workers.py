"""Several mock server processes on one port (SO_REUSEPORT), for high request rates.

The parent forks the workers, waits until each one listens, prints the ready line, then
forwards SIGINT/SIGTERM to them and waits for them to exit. If one worker dies on its own,
the others are stopped too. Each worker has its own live state (settings, recorded requests).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import traceback

from faregate.mock.settings import MockSettings


def _reserve_port(host: str) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket holding a free port until the workers bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def _worker(settings: MockSettings, host: str, port: int, protocol: str, ready_fd: int) -> None:
    from faregate.mock.server import run_loop, serve

    def on_ready(url: str) -> None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    run_loop(serve(settings, host, port, protocol, reuse_port=True, on_ready=on_ready))


def run_workers(settings: MockSettings, host: str, port: int, protocol: str, workers: int) -> int:
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        print("faregate mock-upstream: --workers needs fork() and SO_REUSEPORT", file=sys.stderr)
        return 2
    from faregate.mock.server import _url, ready_line

    holder = _reserve_port(host) if port == 0 else None
    if holder is not None:
        port = holder.getsockname()[1]
    children: set[int] = set()
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                for sig in previous:
                    signal.signal(sig, signal.SIG_DFL)
                os.close(read_fd)
                if holder is not None:
                    holder.close()
                _worker(settings, host, port, protocol, write_fd)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.add(pid)
    os.close(write_fd)

    ready = 0
    while ready < workers:
        chunk = os.read(read_fd, 64)
        if not chunk:  # every worker either reported or died
            break
        ready += len(chunk)
    os.close(read_fd)
    if holder is not None:
        holder.close()
    if ready == workers and not stopping:
        print(ready_line(_url(host, port), protocol), flush=True)
    else:
        forward(signal.SIGTERM, None)

    code = 0 if ready == workers else 1
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        children.discard(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            code = 1
        if not stopping:  # a worker died on its own: stop the rest
            code = 1
            forward(signal.SIGTERM, None)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    return code
