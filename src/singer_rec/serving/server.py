"""Start and stop ``mlflow models serve`` for a model URI (the tests and the serving benchmark use it).

The server runs in a session of its own, so :func:`stop` ends it and the ``uvicorn`` it executes
together (its process group). It binds to 127.0.0.1 unless ``host`` says otherwise.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_command(model_uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-p", str(port), "-h", host]


def start(model_uri: str, port: int, log_path: Path, env: Mapping[str, str] | None = None,
          host: str = "127.0.0.1", cwd: Path | None = None) -> subprocess.Popen:
    """The server process (its output goes to ``log_path``); call :func:`wait_until_ready` next."""
    with open(log_path, "w") as log:
        return subprocess.Popen(serve_command(model_uri, port, host), cwd=cwd, env=dict(env or os.environ),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_ready(process: subprocess.Popen, url: str, log_path: Path, timeout_s: float = 120.0) -> None:
    """Until ``/ping`` answers 200; a RuntimeError with the log's tail if the server exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{Path(log_path).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no /ping within {timeout_s:.0f} s:\n{Path(log_path).read_text()[-3000:]}")
        time.sleep(0.5)


def stop(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM to the server's process group, SIGKILL if it is still there after ``timeout_s``."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def post(url: str, body: bytes | dict, timeout_s: float = 120.0) -> tuple[int, dict]:
    """POST a JSON body to ``<url>/invocations``: (HTTP status, decoded JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
