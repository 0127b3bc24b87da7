"""Progress bars of map and as_completed, read through a real pseudo-terminal."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

PROGRAM = textwrap.dedent("""
    import sys
    {prelude}
    import turbolift
    from turbolift import on

    @on()
    def square(x):
        return x * x

    assert list(square.map(range(200), progress={progress})) == [x * x for x in range(200)]
    futures = [square.submit(x) for x in range(30)]
    assert sorted(f.result() for f in turbolift.as_completed(futures, progress={progress})) == \\
        sorted(x * x for x in range(30))
    print("done", flush=True)
""")


def run_on_a_terminal(tmp_path, *, distributed, progress="True", prelude="", env=None) -> str:
    """Run the program with its stderr on a pseudo-terminal; return what the terminal showed."""
    script = tmp_path / "app.py"
    script.write_text(PROGRAM.format(progress=progress, prelude=prelude))
    command = [sys.executable, "-m", "turbolift", "--workers", "2", str(script)] if distributed \
        else [sys.executable, str(script)]
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # a 100-column terminal
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
                               env={**os.environ, **(env or {})}, cwd=tmp_path)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:   # the other end closed
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, shown.decode(errors="replace")
    assert out.strip() == b"done"
    return shown.decode(errors="replace")


@pytest.mark.parametrize("distributed", [False, True], ids=["local", "distributed"])
def test_tqdm_draws_the_bar_of_map_and_as_completed(tmp_path, distributed):
    pytest.importorskip("tqdm")
    shown = run_on_a_terminal(tmp_path, distributed=distributed)
    assert "square.map" in shown and "200/200" in shown and "as_completed" in shown and "30/30" in shown
    assert "it/s" in shown or "item/s" in shown


def test_without_tqdm_a_plain_line_says_items_rate_and_time_left(tmp_path):
    shown = run_on_a_terminal(tmp_path, distributed=True, prelude="sys.modules['tqdm'] = None")
    assert "square.map: 200/200 items" in shown and "as_completed: 30/30 items" in shown
    assert "/s" in shown


def test_nothing_is_shown_without_a_terminal_unless_always(tmp_path):
    script = tmp_path / "app.py"
    for progress, shows in (("True", False), ("'always'", True), ("None", False)):
        script.write_text(PROGRAM.format(progress=progress, prelude="sys.modules['tqdm'] = None"))
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert ("square.map: 200/200 items" in done.stderr) is shows, (progress, done.stderr)


def test_the_environment_turns_progress_on_for_every_map(tmp_path):
    shown = run_on_a_terminal(tmp_path, distributed=False, progress="None",
                              prelude="sys.modules['tqdm'] = None", env={"TURBOLIFT_PROGRESS": "1"})
    assert "square.map: 200/200 items" in shown
