"""Switching turbolift on without `python -m turbolift`, and configuration precedence."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import run_python, write_files

from turbolift._enabling import config as _config
from turbolift._enabling import site as _site
from turbolift.errors import ConfigurationError

APP = """
    import json, os
    from turbolift import on

    @on()
    def where():
        return os.getpid()

    print(json.dumps({"me": os.getpid(), "ran_in": where()}))
"""


def _turbolift(*args):
    return subprocess.run([sys.executable, "-m", "turbolift", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def hook_installed():
    """install-hook into this very environment; always removed afterwards."""
    assert not _site.pth_path().exists(), "a turbolift .pth is already installed here"
    out = _turbolift("install-hook")
    assert out.returncode == 0, out.stderr
    try:
        yield _site.pth_path()
    finally:
        _turbolift("uninstall-hook")
        assert not _site.pth_path().exists()


def test_install_hook_print_shows_and_writes_nothing():
    out = _turbolift("install-hook", "--print")
    assert out.returncode == 0
    assert str(_site.pth_path()) in out.stdout
    assert "TURBOLIFT" in out.stdout
    assert not _site.pth_path().exists()


def test_turbolift_env_var_distributes_after_install_hook_and_not_after_uninstall(tmp_path, cache_dir,
                                                                                   hook_installed):
    write_files(tmp_path, {"app.py": APP})
    on = json.loads(run_python(["app.py"], tmp_path, cache_dir, TURBOLIFT="1",
                               TURBOLIFT_WORKERS="1").stdout)
    assert on["ran_in"] != on["me"]
    off = json.loads(run_python(["app.py"], tmp_path, cache_dir).stdout)  # variable unset: local
    assert off["ran_in"] == off["me"]
    _turbolift("uninstall-hook")
    after = json.loads(run_python(["app.py"], tmp_path, cache_dir, TURBOLIFT="1").stdout)
    assert after["ran_in"] == after["me"]


def test_precedence_command_line_then_env_then_pyproject_then_setup_cfg(tmp_path):
    write_files(tmp_path, {
        "pyproject.toml": """
            [tool.turbolift]
            cluster = "local:3"
            workers = 3
            remote = ["a:f", "b:g"]
            timeout = 9.5
        """,
        "setup.cfg": """
            [turbolift]
            cluster = local:4
            retries = 5
            token-file = /from/setup.cfg
        """,
        "sub/dir/.keep": "",
    })
    start = tmp_path / "sub" / "dir"
    settings = _config.load({}, start, environ={})
    assert (settings.cluster, settings.workers, settings.remote, settings.timeout) == \
        ("local:3", 3, ["a:f", "b:g"], 9.5)
    assert (settings.retries, settings.token_file) == (5, "/from/setup.cfg")
    env = {"TURBOLIFT_CLUSTER": "grpc://h:1", "TURBOLIFT_REMOTE": "c:h, d:i", "TURBOLIFT_WORKERS": "7"}
    settings = _config.load({}, start, environ=env)
    assert (settings.cluster, settings.remote, settings.workers) == ("grpc://h:1", ["c:h", "d:i"], 7)
    assert settings.sources["cluster"] == "TURBOLIFT_CLUSTER"
    settings = _config.load({"cluster": "local:1", "remote": [], "workers": None}, start, environ=env)
    assert (settings.cluster, settings.remote, settings.workers) == ("local:1", ["c:h", "d:i"], 7)
    assert settings.sources["cluster"] == "command line"


def test_configuration_errors_name_the_file_and_the_key(tmp_path):
    write_files(tmp_path, {"pyproject.toml": "[tool.turbolift]\nworkrs = 2\n"})
    expected = r"pyproject.toml \[tool.turbolift\]: unknown key\(s\) workrs"
    with pytest.raises(ConfigurationError, match=expected):
        _config.load({}, tmp_path, environ={})
    with pytest.raises(ConfigurationError, match="TURBOLIFT_WORKERS: bad value 'many'"):
        _config.load({}, tmp_path / "nowhere", environ={"TURBOLIFT_WORKERS": "many"})


def test_pyproject_settings_drive_python_m_turbolift(tmp_path, cache_dir):
    write_files(tmp_path, {
        "pyproject.toml": '[tool.turbolift]\nworkers = 1\nremote = ["shapes:area"]\n',
        "shapes.py": "import os\n\ndef area(r):\n    return 3 * r * r, os.getpid()\n",
        "app.py": "import json, os\nfrom shapes import area\nprint(json.dumps([area(2), os.getpid()]))\n",
    })
    out = run_python(["-m", "turbolift", "app.py"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    (value, worker_pid), me = json.loads(out.stdout)
    assert value == 12 and worker_pid != me


def test_a_bad_configuration_stops_before_the_program_runs(tmp_path, cache_dir):
    write_files(tmp_path, {"app.py": "print('the program ran')\n"})
    out = run_python(["-m", "turbolift", "--remote", "no_such_module:f", "app.py"], tmp_path, cache_dir)
    assert out.returncode == 2
    assert "no module named 'no_such_module'" in out.stderr
    assert "the program ran" not in out.stdout
