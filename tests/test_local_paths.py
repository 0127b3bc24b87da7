"""Paths a worker reports, named as the caller names them (``turbolift._wire.local_paths``).

In process: the modules are this interpreter's own (json, a package made
for the test), the reported paths are what a worker's bundle directory, a
container's site-packages or another standard library would give.
"""
from __future__ import annotations

import importlib
import json
import sys

from turbolift._wire import local_paths

DIGEST = "ab" * 32


def test_a_bundle_copy_of_a_project_module_is_the_programs_file(tmp_path, monkeypatch):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("proj.mod")
    try:
        reported = f"/srv/cache/bundles/{DIGEST}/proj/mod.py"
        assert local_paths.module_of(reported) == (str(tmp_path / "proj" / "mod.py"), module)
        assert local_paths.local_path(f"/srv/cache/bundles/{DIGEST}/proj/__init__.py") == \
            str(tmp_path / "proj" / "__init__.py")
        # Another module's file, or a name this process never imported: left as it came.
        assert local_paths.local_path(f"/srv/cache/bundles/{DIGEST}/proj/other.py") == \
            f"/srv/cache/bundles/{DIGEST}/proj/other.py"
        assert local_paths.local_path(f"/srv/cache/bundles/{DIGEST}/mod.py") == \
            f"/srv/cache/bundles/{DIGEST}/mod.py"
    finally:
        sys.modules.pop("proj.mod", None)
        sys.modules.pop("proj", None)


def test_installed_and_standard_library_files_of_another_machine():
    mine = json.__file__
    for reported in ("/usr/local/lib/python3.11/json/__init__.py",
                     "/opt/venv/lib/python3.11/site-packages/json/__init__.py"):
        assert local_paths.local_path(reported) == mine
    assert local_paths.local_path("/somewhere/else/json/__init__.py") == "/somewhere/else/json/__init__.py"
    assert local_paths.local_path("<string>") == "<string>"


def test_a_traceback_names_each_frame_as_here():
    reported = (f'Traceback (most recent call last):\n  File "/w/bundles/{DIGEST}/json/decoder.py", line 3, '
                'in f\n    x = 1\n  File "<string>", line 1, in <module>\nValueError: "/w/x.py"\n'
                '  | ExceptionGroup: g (1 sub-exception)\n'
                f'  |   File "/w/bundles/{DIGEST}/json/decoder.py", line 4\n')
    assert local_paths.local_traceback(reported) == reported.replace(
        f"/w/bundles/{DIGEST}/json/decoder.py", sys.modules["json.decoder"].__file__)


def test_a_bundle_copy_of_a_module_not_imported_here_is_the_file_on_sys_path(tmp_path, monkeypatch):
    (tmp_path / "only_on_workers.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert local_paths.local_path(f"/srv/bundles/{DIGEST}/only_on_workers.py") == \
        str(tmp_path / "only_on_workers.py")
    assert local_paths.module_of(f"/srv/bundles/{DIGEST}/only_on_workers.py") is None   # (no module here)
    assert local_paths.local_path(f"/srv/bundles/{DIGEST}/__turbolift__/source/x.py") == \
        f"/srv/bundles/{DIGEST}/__turbolift__/source/x.py"


def test_the_programs_script_is_its_main_module(monkeypatch):
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__file__", "/home/me/app.py", raising=False)
    assert local_paths.module_of("/home/me/app.py") == ("/home/me/app.py", main)
