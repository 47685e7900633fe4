"""Run ``executor run`` in a child process and watch it: its stderr, its exit, what it leaves.

Every process the child starts inherits a mark in its environment, so the tests can tell
whether any of them outlived the run.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

def marked_processes(mark: str) -> list[int]:
    """PIDs of live processes whose environment carries ``mark`` (the child and all it spawned)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def start_cli(tmp_path, *args):
    mark = f"DNNSPLIT_TEST_{uuid.uuid4().hex}"
    env = dict(os.environ, DNNSPLIT_TEST_MARK=mark, PYTHONFAULTHANDLER="1")
    err = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnnsplit.executor.cli", "run", str(tmp_path / "m.keras"), "--plan",
         str(tmp_path / "plan.json"), *args], env=env, stdout=subprocess.PIPE, stderr=err,
        cwd=Path(__file__).resolve().parents[2], preexec_fn=default_sigint)
    return proc, mark


def default_sigint() -> None:
    """Ctrl-C reaches the run as it does from a terminal, even when the tests themselves were
    started in the background (a shell starts background jobs with SIGINT ignored, and a
    Python started that way never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(path: Path, text: str, proc, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"exited early: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{text!r} never appeared: {path.read_text(errors='replace')[-2000:]}")


def exit_code(proc, stderr: Path, seconds: float) -> int:
    """The exit code, or fail with the run's stderr (a faulthandler dump of every thread)."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        time.sleep(3)
        proc.kill()
        proc.wait()
        tail = stderr.read_text(errors="replace")[-6000:]
        pytest.fail(f"still running {seconds:g} s later: {tail}")


def gone(mark: str, seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.3)
    return marked_processes(mark)


