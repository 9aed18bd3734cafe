"""Real `cit serve` / `cit worker` processes on loopback, for load and fault tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings

CIT = str(Path(sys.executable).parent / "cit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CIT_ENV": "test",
        "CIT_DATABASE_URL": settings.database_url,
        "CIT_SECRET_KEY": settings.secret_key,
        "CIT_DATA_DIR": str(settings.data_dir),
        "CIT_SUBMIT_RATE_LIMIT": "1000000",
        "CIT_LOG_ACCESS": "false",
        **extra,
    }


class Process:
    """A service process; `kill()` is kill -9 by default."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            [CIT, *self.args], env=self.env, stdout=handle, stderr=subprocess.STDOUT
        )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Server(Process):
    def __init__(self, settings: Settings, tmp: Path, *extra: str, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        super().__init__(
            ["serve", "--port", str(self.port), *extra],
            service_env(settings, CIT_PUBLIC_BASE_URL=self.base, **env),
            tmp / f"serve-{self.port}.log",
        )

    def start(self) -> Server:
        super().start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                pytest.fail(f"cit serve exited: {self.output()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail("cit serve did not start in 60 s")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Process]]:
    """Processes a test starts; all are killed at the end, whatever happened."""
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()
