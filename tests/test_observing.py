"""Seeing what runs where: `turbolift status`, `python -m turbolift -v`, and the command line's errors."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import child_env, run_python, write_files

from turbolift import Workers, on
from turbolift._enabling import switch
from turbolift._runtime import disable


def add(a, b):
    return a + b


def status(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turbolift", "status", *args], capture_output=True,
                          text=True, env=child_env(cache_dir), timeout=120)


def test_status_json_of_a_hand_started_worker_shows_its_calls_and_bundles(start_worker, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-for-status")
    token.chmod(0o600)
    worker = start_worker(token_file=token)
    switch.enable(Workers(worker.address, token_file=str(token)))
    try:
        assert [on()(add)(i, 1) for i in range(5)] == [1, 2, 3, 4, 5]
    finally:
        disable()
    shown = status(f"grpc://{worker.address}", "--token-file", str(token), "--json", cache_dir=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert row["address"] == worker.address and row["pid"] > 0 and row["calls_served"] >= 5
    assert row["calls_running"] == 0 and row["slots"] >= 1 and row["memory_rss"] > 0
    assert len(row["bundles"]) >= 1 and all(bundle["bytes"] > 0 for bundle in row["bundles"])
    assert row["turbolift"] and row["python"].startswith("cpython") and row["uptime_seconds"] >= 0
    # Without the token it cannot ask: one row saying so, a non-zero status, no traceback.
    refused = status(f"grpc://{worker.address}", "--json", cache_dir=tmp_path)
    assert refused.returncode == 1 and "error" in json.loads(refused.stdout)[0]
    human = status(f"grpc://{worker.address}", "--token-file", str(token), cache_dir=tmp_path)
    assert "calls: 0 running of" in human.stdout and "served" in human.stdout and "bundles: " in human.stdout


def test_status_finds_the_local_cluster_of_a_running_program(tmp_path):
    write_files(tmp_path, {"app.py": """
        import pathlib, time
        from turbolift import on

        @on()
        def add(a, b):
            return a + b

        assert add(1, 2) == 3
        pathlib.Path("ready").write_text("yes")
        deadline = time.monotonic() + 120
        while not pathlib.Path("stop").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    """})
    program = subprocess.Popen([sys.executable, "-m", "turbolift", "--workers", "2", "app.py"], cwd=tmp_path,
                               env=child_env(tmp_path / "cache"))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shown = status("--json", cache_dir=tmp_path)   # (other programs' clusters may show too)
        mine = [row for row in json.loads(shown.stdout) if row.get("program_pid") == program.pid]
        assert len(mine) == 2 and sum(row["calls_served"] for row in mine) >= 1
        watched = status("--watch", "0.2", "--count", "2", cache_dir=tmp_path)
        assert watched.stdout.count(f"program pid {program.pid}") == 4
    finally:
        (tmp_path / "stop").write_text("")
        program.wait(60)


def test_verbose_names_the_cluster_an_upload_first_calls_and_a_retry(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": """
        import os
        from turbolift import on

        @on(retries=2)
        def dies_once(marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(3)
            return "survived"

        print(dies_once(os.path.abspath("died")))
    """})
    done = run_python(["-m", "turbolift", "-v", "--workers", "2", "app.py"], tmp_path, cache_dir, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "survived"
    log = done.stderr
    assert "turbolift: starting LocalQueue(workers=2" in log and "worker(s) ready in" in log
    assert "turbolift: uploaded bundle sha256:" in log and "bytes) to worker" in log
    assert "turbolift: first call of dies_once on worker local-" in log
    assert "lost during a call of" in log and "retrying on another worker (attempt 2 of 3)" in log
    quiet = run_python(["-m", "turbolift", "--workers", "2", "app.py"], tmp_path, cache_dir, timeout=180)
    assert quiet.returncode == 0 and "turbolift:" not in quiet.stderr   # silent by default


def test_command_line_errors_are_one_line_naming_what_to_do(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": """
        from turbolift import on

        @on()
        def f():
            return 1

        print(f())
    """})
    for args, says in [
        (["--workers", "0", "app.py"], "--workers must be at least 1"),
        (["--timeout", "-1", "app.py"], "--timeout must be at least 0"),
        (["--retries", "-2", "app.py"], "--retries must be at least 0"),
        (["nosuch.py"], "no such script: nosuch.py"),
        (["--cluster", "grpc://127.0.0.1:1", "app.py"], "did not become healthy"),
    ]:
        done = run_python(["-m", "turbolift", *args], tmp_path, cache_dir, timeout=120)
        assert done.returncode != 0 and says in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
    version = run_python(["-m", "turbolift", "-V"], tmp_path, cache_dir)
    assert version.returncode == 0 and version.stdout.startswith("turbolift ")
    helped = run_python(["-m", "turbolift", "--help"], tmp_path, cache_dir)
    for line in ("python -m turbolift [options] (SCRIPT | -m MODULE) [ARGS...]", "SCRIPT", "ARGS",
                 "worker ", "status ", "bundle ", "install-hook ", "kube "):
        assert line in helped.stdout, line
    bundle = run_python(["-m", "turbolift", "bundle", "nosuch.py"], tmp_path, cache_dir)
    assert bundle.returncode != 0 and "Traceback" not in bundle.stderr and "nosuch.py" in bundle.stderr


def test_the_console_script_names_itself(tmp_path, cache_dir):
    script = Path(sys.executable).parent / "turbolift"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=child_env(cache_dir),
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: turbolift [options]")


def test_worker_metrics_scraped_over_http(start_worker, tmp_path):
    import re
    import urllib.request

    worker = start_worker(extra_args=("--metrics-port", "0"))
    announced = ""
    deadline = time.monotonic() + 30
    while "metrics on" not in announced and time.monotonic() < deadline:
        announced += worker.process.stderr.readline()
    url = re.search(r"metrics on (http://\S+)", announced).group(1)
    switch.enable(Workers(worker.address))
    try:
        assert [on()(add)(i, 1) for i in range(7)] == list(range(1, 8))
    finally:
        disable()
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    name = 'function="test_observing.add"'
    assert re.search(r'turbolift_calls_started_total\{' + name + r'\} 7\.0', text), text
    assert re.search(r'turbolift_calls_finished_total\{' + name + r',outcome="returned"\} 7\.0', text)
    assert re.search(r'turbolift_call_seconds_count\{' + name + r'\} 7\.0', text)
    assert re.search(r"turbolift_bytes_received_total [1-9]", text) and "turbolift_slots 16.0" in text
    assert re.search(r"turbolift_bundles [1-9]", text) and "turbolift_slots_busy 0.0" in text
