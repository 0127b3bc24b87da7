"""Workers run a call only in an environment matching the caller's pins."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import child_env, make_installed_library, make_wheel, run_python, write_files

LIB_V1 = """
    VERSION = "1.0"

    def describe(x):
        return f"v{VERSION}:{x}"
"""
LIB_V2 = LIB_V1.replace('"1.0"', '"2.0"')
APP = """
    import json
    from turbolift import on
    import pinnedlib

    @on()
    def use(x):
        return pinnedlib.describe(x)

    try:
        print(json.dumps({"ok": use(5)}))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                          "differences": getattr(exc, "differences", None)}))
"""


def _caller(tmp_path, cache_dir, address):
    site = make_installed_library(tmp_path / "caller-env" / "site-packages", "pinnedlib", "1.0", LIB_V1)
    write_files(tmp_path / "proj", {"app.py": APP})
    out = run_python(["-m", "turbolift", "--cluster", f"grpc://{address}", "app.py"], tmp_path / "proj",
                     cache_dir, PYTHONPATH=str(site))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_missing_and_different_versions_are_named_and_nothing_runs(tmp_path, cache_dir, start_worker):
    bare = start_worker()
    report = _caller(tmp_path, cache_dir, bare.address)
    assert report["error"] == "EnvironmentMismatch"
    assert report["differences"] == [["pinnedlib", "1.0", "not installed"]]
    assert "pinnedlib: wanted 1.0, found not installed" in report["message"]
    assert "--install-requirements" in report["message"]

    other = make_installed_library(tmp_path / "worker-env" / "site-packages", "pinnedlib", "2.0", LIB_V2)
    newer = start_worker(env={"PYTHONPATH": str(other)})
    report = _caller(tmp_path, cache_dir, newer.address)
    assert report["differences"] == [["pinnedlib", "1.0", "2.0"]]


def test_install_requirements_installs_the_pins_aside_and_the_call_succeeds(tmp_path, cache_dir,
                                                                           start_worker):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "pinnedlib", "1.0", LIB_V1)
    make_wheel(wheels, "pinnedlib", "2.0", LIB_V2)
    other = make_installed_library(tmp_path / "worker-env" / "site-packages", "pinnedlib", "2.0", LIB_V2)
    worker_cache = tmp_path / "worker-cache"
    worker = start_worker(cache_dir=worker_cache, extra_args=("--install-requirements",),
                          env={"PYTHONPATH": str(other), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)})
    assert _caller(tmp_path, cache_dir, worker.address) == {"ok": "v1.0:5"}
    envs = list((worker_cache / "envs").iterdir())
    assert len(envs) == 1 and (envs[0] / "pinnedlib-1.0.dist-info").is_dir()
    # The worker's own environment was not touched.
    assert not (other / "pinnedlib-1.0.dist-info").exists()
    assert (other / "pinnedlib-2.0.dist-info").is_dir()
    # A second caller with the same pins reuses the installed set.
    assert _caller(tmp_path, cache_dir, worker.address) == {"ok": "v1.0:5"}
    assert list((worker_cache / "envs").iterdir()) == envs


def test_vcs_dirs_and_virtualenvs_are_never_shipped(tmp_path, cache_dir):
    write_files(tmp_path, {
        "helper.py": "X = 1\n",
        ".git/hooks/gitmod.py": "Y = 2\n",
        ".venv/pyvenv.cfg": "home = /usr/bin\n",
        ".venv/lib/python3/site-packages/vendored.py": "Z = 3\n",
        "venv2/pyvenv.cfg": "home = /usr/bin\n",
        "venv2/lib/loose.py": "W = 4\n",
        "app.py": """
            import os, sys
            here = os.path.dirname(os.path.abspath(__file__))
            sys.path += [os.path.join(here, ".git", "hooks"),
                         os.path.join(here, ".venv", "lib", "python3", "site-packages"),
                         os.path.join(here, "venv2", "lib")]
            import helper, gitmod, vendored, loose
        """,
    })
    out = subprocess.run([sys.executable, "-m", "turbolift", "bundle", "-m", "app", "--json"], cwd=tmp_path,
                         env=child_env(cache_dir), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = [name for name, _ in json.loads(out.stdout)["files"]]
    assert "helper.py" in names and "app.py" in names
    assert not [n for n in names if "git" in n or "venv" in n or n in ("vendored.py", "loose.py")], names


def test_changed_code_reaches_new_callers_while_old_callers_keep_theirs(tmp_path, cache_dir, start_worker):
    worker = start_worker()
    write_files(tmp_path, {
        "greeting.py": "def greet(name):\n    return 'hello ' + name\n",
        "app.py": """
            import os, sys, time
            from turbolift import on
            import greeting

            @on()
            def run(name):
                return greeting.greet(name)

            print(run("a"), flush=True)
            if len(sys.argv) > 1:  # wait for the go-ahead, then call again
                deadline = time.monotonic() + 60
                while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                print(run("b"), flush=True)
        """,
    })
    go = tmp_path / "go"
    old = subprocess.Popen([sys.executable, "-m", "turbolift", "--cluster", f"grpc://{worker.address}",
                            "app.py", str(go)], cwd=tmp_path, env=child_env(cache_dir),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert old.stdout.readline().strip() == "hello a"
    (tmp_path / "greeting.py").write_text("def greet(name):\n    return 'HOWDY ' + name\n")
    time.sleep(0.01)
    new = run_python(["-m", "turbolift", "--cluster", f"grpc://{worker.address}", "app.py"], tmp_path,
                     cache_dir)
    assert new.stdout.strip() == "HOWDY a", new.stderr
    go.touch()
    assert old.stdout.readline().strip() == "hello b"
    old.wait(30)
    old.stdout.close()
    old.stderr.close()
