"""Bundles: content-addressed, project code only, pinned third-party versions."""
from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from unittest.mock import ANY

import dill
import pytest
from conftest import write_files

from turbolift._caller import bundling as _bundle
from turbolift._worker.bundle_store import BundleStore
from turbolift.errors import BundleError, ConfigurationError

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path, monkeypatch):
    write_files(tmp_path, {
        "calc/__init__.py": "",
        "calc/core.py": """
            import json
            import dill
            from .helpers import twice
            from calc import consts

            def work(x):
                return twice(x) + consts.K
        """,
        "calc/helpers.py": "def twice(x):\n    return 2 * x\n",
        "calc/consts.py": "K = 1\n",
        "calc/unused.py": "raise RuntimeError('never imported')\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "calc" or m.startswith("calc.")]:
        del sys.modules[name]


def _names(bundle):
    """The bundle's files but its bytecode (there when the test's imports wrote some)."""
    return {name for name, _ in bundle.files if name != _bundle.BYTECODE}


def test_bundle_holds_the_module_and_its_project_imports_only(project):
    import calc.core  # noqa: F401  (as the program would have)

    bundle = _bundle._module_bundle("calc.core")
    assert _names(bundle) == {"calc/__init__.py", "calc/core.py", "calc/helpers.py", "calc/consts.py",
                              _bundle.MANIFEST}
    manifest = bundle.manifest
    assert manifest["requirements"] == {"dill": dill.__version__}  # json is stdlib: not pinned
    assert manifest["python"] == "%d.%d" % sys.version_info[:2]
    assert manifest["modules"]["calc.helpers"] == "calc/helpers.py"


def test_a_package_ships_its_data_files_and_nothing_else_beside_it(project):
    """What a package's code may read beside itself travels with it; hidden, never-shipped and compiled files,
    a subpackage not shipped and the project's root do not."""
    write_files(project, {
        "calc/table.json": "{}", "calc/templates/page.html": "<p>", "calc/templates/deep/x.txt": "x",
        "calc/.secret": "s", "calc/.cache/blob": "b", "calc/__pycache__/stale.txt": "p",
        "calc/node_modules/m.js": "m", "calc/_speedups.so": "elf", "calc/script.py": "print(1)\n",
        "calc/templates/run.py": "print('a script the code runs')\n",
        "calc/env/pyvenv.cfg": "home = /usr/bin", "calc/env/bin/python": "a virtual environment's",
        "calc/sub/__init__.py": "", "calc/sub/sub.txt": "not shipped: calc.sub is not imported",
        "root.csv": "the project's root is not a package",
    })
    import calc.core  # noqa: F401

    bundle = _bundle._module_bundle("calc.core")
    assert _names(bundle) == {"calc/__init__.py", "calc/core.py", "calc/helpers.py", "calc/consts.py",
                              "calc/table.json", "calc/templates/page.html", "calc/templates/deep/x.txt",
                              "calc/templates/run.py", _bundle.MANIFEST}
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
        assert archive.read("calc/templates/deep/x.txt") == b"x"


def test_a_package_with_too_much_data_ships_none_of_it_and_says_so(project, monkeypatch):
    """Data files are shipped at best: over the limit, none (a call that does not read them goes on)."""
    import logging

    from turbolift._caller import package_data

    write_files(project, {f"calc/data/{n}.txt": "x" * 10 for n in range(3)})
    monkeypatch.setattr(package_data, "MAX_DATA_FILES", 2)
    monkeypatch.setattr(package_data, "_warned", set())
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())   # type: ignore[method-assign]
    # (on turbolift's own logger, switched on: an earlier test's logging.config may have disabled it)
    monkeypatch.setattr(logging.getLogger("turbolift"), "disabled", False)
    logging.getLogger("turbolift").addHandler(handler)
    try:
        import calc.core  # noqa: F401

        bundle = _bundle._module_bundle("calc.core")
    finally:
        logging.getLogger("turbolift").removeHandler(handler)
    assert not any(name.startswith("calc/data/") for name in _names(bundle))
    assert any("the data files of package calc" in line and "not shipped" in line for line in said), said


def test_data_files_that_cannot_be_read_or_linked_in_circles_are_left_out(project):
    write_files(project, {"calc/data/ok.txt": "ok", "calc/data/secret.txt": "s"})
    os.chmod(project / "calc" / "data" / "secret.txt", 0)
    os.symlink(project / "calc" / "data", project / "calc" / "data" / "loop")   # linked into itself
    try:
        import calc.core  # noqa: F401

        names = _names(_bundle._module_bundle("calc.core"))
    finally:
        os.chmod(project / "calc" / "data" / "secret.txt", 0o644)
    assert "calc/data/ok.txt" in names
    # Root reads what it likes: only an unprivileged user cannot read the file.
    assert ("calc/data/secret.txt" in names) == (os.geteuid() == 0)
    assert not any("/loop/" in name for name in names), names


def test_bundle_id_is_the_content_hash_and_is_deterministic(project):
    import hashlib

    import calc.core  # noqa: F401

    first = _bundle._module_bundle("calc.core")
    again = _bundle._module_bundle("calc.core")
    assert first.id == again.id == "sha256:" + hashlib.sha256(first.data).hexdigest()
    (project / "calc" / "helpers.py").write_text("def twice(x):\n    return x + x\n")
    assert _bundle._module_bundle("calc.core").id != first.id


def test_installed_library_functions_are_not_shipped_but_pinned():
    bundle = _bundle._module_bundle("dill")
    assert _names(bundle) == {_bundle.MANIFEST}
    assert bundle.manifest["installed"] == ["dill"]
    assert bundle.manifest["requirements"] == {"dill": dill.__version__}


def test_store_rejects_content_that_does_not_match_its_id(tmp_path, project):
    import calc.core  # noqa: F401

    bundle = _bundle._module_bundle("calc.core")
    store = BundleStore(str(tmp_path / "store"))
    tampered = bundle.data[:-1] + bytes([bundle.data[-1] ^ 1])
    with pytest.raises(BundleError, match="does not match its id"):
        store.put(bundle.id, len(tampered), [tampered])
    with pytest.raises(BundleError, match="malformed bundle id"):
        store.put("sha256:../../etc", 1, [b"x"])
    assert store.put(bundle.id, len(bundle.data), [bundle.data]) is True
    assert store.put(bundle.id, len(bundle.data), [bundle.data]) is False
    assert store.load(bundle.id).resolve("calc.core", "work")(3) == 7


def test_store_refuses_entries_that_escape_the_bundle(tmp_path):
    import hashlib

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(_bundle.MANIFEST, json.dumps({"format": 1, **_bundle.python_tag()}))
        archive.writestr("../outside.py", "x = 1")
    data = buffer.getvalue()
    bundle_id = "sha256:" + hashlib.sha256(data).hexdigest()
    store = BundleStore(str(tmp_path / "store"))
    with pytest.raises(BundleError, match="escape"):   # refused at upload: nothing is stored
        store.put(bundle_id, len(data), [data])
    assert not store.has(bundle_id) and store.load(bundle_id) is None
    assert not (tmp_path / "store" / "outside.py").exists()
    assert [name for name in os.listdir(store.root)] == []


@pytest.mark.parametrize("names, refusal", [
    (["pkg/./mod.py", "pkg/mod.py"], "not a plain relative path"),
    (["pkg//mod.py", "pkg/mod.py"], "not a plain relative path"),
    (["./" + _bundle.MANIFEST], "not a plain relative path"),
    (["pkg", "pkg/mod.py"], "inside another entry that is a file"),
    (["pkg/mod.py/"], "inside another entry that is a file"),
])
def test_store_refuses_entries_that_name_one_file_twice_or_nest_in_a_file(tmp_path, names, refusal):
    """Unpacked, these would overwrite each other (or fail): refused at upload, with the entry named."""
    import hashlib

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(_bundle.MANIFEST, json.dumps({"format": 1, **_bundle.python_tag()}))
        for name in names:
            if name.endswith("/"):
                archive.writestr("pkg/mod.py", "x = 1")
            archive.writestr(name, "" if name.endswith("/") else "x = 2")
    data = buffer.getvalue()
    bundle_id = "sha256:" + hashlib.sha256(data).hexdigest()
    store = BundleStore(str(tmp_path / "store"))
    with pytest.raises(BundleError, match=refusal):
        store.put(bundle_id, len(data), [data])
    assert not store.has(bundle_id) and os.listdir(store.root) == []


def _package_bundle(sources: dict, modules: dict) -> tuple[str, bytes]:
    import hashlib

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        manifest = {"format": 1, **_bundle.python_tag(), "modules": modules}
        archive.writestr(_bundle.MANIFEST, json.dumps(manifest))
        for name, text in sources.items():
            archive.writestr(name, text)
    data = buffer.getvalue()
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


@pytest.fixture
def forget_swapped():
    yield
    for name in [m for m in sys.modules if m.partition(".")[0] == "swq"]:
        del sys.modules[name]


def test_a_submodule_only_the_second_bundle_has_is_found_in_a_package_both_share(tmp_path, forget_swapped):
    store = BundleStore(str(tmp_path / "store"))
    a, b = "def a():\n    return 'a'\n", "def b():\n    return 'b'\n"
    first = _package_bundle({"swq/__init__.py": "", "swq/a.py": a},
                            {"swq": "swq/__init__.py", "swq.a": "swq/a.py"})
    second = _package_bundle({"swq/__init__.py": "", "swq/a.py": a, "swq/b.py": b},
                             {"swq": "swq/__init__.py", "swq.a": "swq/a.py", "swq.b": "swq/b.py"})
    for bundle_id, data in (first, second):
        store.put(bundle_id, len(data), [data])
    assert store.load(first[0]).resolve("swq.a", "a")() == "a"
    assert store.load(second[0]).resolve("swq.b", "b")() == "b"


def test_a_changed_submodule_the_first_bundle_never_imported_is_the_second_bundles_version(tmp_path,
                                                                                          forget_swapped):
    store = BundleStore(str(tmp_path / "store"))
    modules = {"swq": "swq/__init__.py", "swq.a": "swq/a.py", "swq.b": "swq/b.py"}
    a, b1, b2 = "def a():\n    return 'a'\n", "def b():\n    return 'b1'\n", "def b():\n    return 'b2'\n"
    first = _package_bundle({"swq/__init__.py": "", "swq/a.py": a, "swq/b.py": b1}, modules)
    second = _package_bundle({"swq/__init__.py": "", "swq/a.py": a, "swq/b.py": b2}, modules)
    for bundle_id, data in (first, second):
        store.put(bundle_id, len(data), [data])
    loaded = store.load(first[0])
    loaded.activate()
    assert loaded.resolve("swq.a", "a")() == "a"
    loaded = store.load(second[0])
    loaded.activate()
    assert loaded.resolve("swq.b", "b")() == "b2"


def test_oversize_bundles_are_refused_naming_the_largest_files():
    collector = _bundle._Collector()
    with pytest.raises(BundleError, match=r"big\.bin .*exceeds|largest files: big\.bin"):
        _bundle.build(collector, {"big.bin": b"x" * 2000, "small.py": b"y"}, {}, limit=1000)


def test_the_cache_is_checked_against_the_archive_before_use(tmp_path, project):
    import calc.core  # noqa: F401

    bundle = _bundle._module_bundle("calc.core")
    first = BundleStore(str(tmp_path / "store"))
    first.put(bundle.id, len(bundle.data), [bundle.data])
    directory = first.load(bundle.id).path
    # Someone edits the unpacked copy: a fresh worker unpacks the archive again.
    with open(f"{directory}/calc/helpers.py", "w") as handle:
        handle.write("def twice(x):\n    return 'planted'\n")
    for name in [m for m in sys.modules if m == "calc" or m.startswith("calc.")]:
        del sys.modules[name]
    second = BundleStore(str(tmp_path / "store"))
    assert second.load(bundle.id).resolve("calc.core", "work")(3) == 7
    # A damaged archive is dropped, so that the caller uploads it again.
    archive = tmp_path / "store" / "bundles" / (bundle.id[7:] + ".zip")
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    assert BundleStore(str(tmp_path / "store")).load(bundle.id) is None
    assert not archive.exists()


def test_a_cache_others_can_write_gets_a_private_directory_inside(tmp_path):
    """As a Kubernetes emptyDir (0777, or 2775/2777 with fsGroup) is: the bundles go in a directory
    of this user's that no one else can enter; one that others can write is refused."""
    for mode in (0o777, 0o2777, 0o2775):
        shared = tmp_path / f"shared-{mode:o}"
        shared.mkdir()
        shared.chmod(mode)
        store = BundleStore(str(shared))
        private = shared / f"turbolift-{os.getuid()}"
        assert store.cache_root == str(private)
        assert private.stat().st_mode & 0o777 == 0o700 and private.stat().st_uid == os.getuid()
    private.chmod(0o777)
    with pytest.raises(ConfigurationError, match="writable by other users"):
        BundleStore(str(shared))


def test_an_unpacked_bundle_with_an_extra_file_is_unpacked_afresh(tmp_path, project):
    """A file planted beside the bundle's own (it could be imported) is noticed: the copy is replaced."""
    import calc.core  # noqa: F401

    bundle = _bundle.module_bundle("calc.core")
    store = BundleStore(str(tmp_path / "store"))
    store.put(bundle.id, len(bundle.data), [bundle.data])
    assert store.load(bundle.id).resolve("calc.core", "work")(3) == 7
    unpacked = Path(store.root) / bundle.id[7:]
    (unpacked / "calc" / "evil.py").write_text("raise SystemExit('planted')")
    again = BundleStore(str(tmp_path / "store"))
    assert again.load(bundle.id).resolve("calc.core", "work")(3) == 7
    assert not (unpacked / "calc" / "evil.py").exists()


# -- the caller's bundle cache: real files, real builds, fresh processes -------------

_BUILD_ONCE = '''
import importlib, json, os, sys
sys.path.insert(0, sys.argv[1])
importlib.import_module(sys.argv[2])
from turbolift._caller import bundling, pins
# Files the test wrote a moment ago (their ctime is now) are trusted, unless it asks otherwise.
bundling.RACY_NS = pins.RACY_NS = int(os.environ.get("TEST_RACY_NS", "0"))
built = []
real_build = bundling.build
def counting_build(*args, **kwargs):
    built.append(1)
    return real_build(*args, **kwargs)
bundling.build = counting_build
bundle = bundling.module_bundle(sys.argv[2])
print(json.dumps({"id": bundle.id, "built": len(built), "requirements": bundle.manifest["requirements"],
                  "files": sorted(name for name, _ in bundle.files)}))
'''
_AN_HOUR_AGO = 3600


def _age(*paths, seconds=_AN_HOUR_AGO):
    """Set the files' times in the past: files modified seconds ago are never trusted unread."""
    when = time.time() - seconds
    for path in paths:
        for each in ([path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] + [path]):
            os.utime(each, (when, when))


@pytest.fixture
def on_disk(tmp_path):
    """A project whose module ``calc.core`` imports siblings (one lazily) and a library, files aged."""
    source = write_files(tmp_path / "src", {
        "calc/__init__.py": "",
        "calc/core.py": """
            import dill
            from .helpers import twice
            from calc import consts

            def work(x):
                return twice(x) + consts.K

            def later():
                from . import extra  # imported when called only: still shipped
                from . import optional  # absent for now
                return extra, optional
        """,
        "calc/helpers.py": "def twice(x):\n    return 2 * x\n",
        "calc/consts.py": "K = 1\n",
        "calc/extra.py": "E = 1\n",
    })
    _age(source)
    return source


def _fresh_build(source: Path, cache, module="calc.core", **env) -> dict:
    """Build ``module``'s bundle in a fresh process; ``cache`` is TURBOLIFT_BUNDLE_CACHE (None: unset)."""
    environment = {k: v for k, v in os.environ.items() if k != "TURBOLIFT_BUNDLE_CACHE"}
    if cache is not None:
        environment["TURBOLIFT_BUNDLE_CACHE"] = str(cache)
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", _BUILD_ONCE, str(source), module], cwd=source,
                          env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _uncached_id(source: Path, module="calc.core") -> str:
    return _fresh_build(source, "0", module)["id"]


def test_data_files_can_be_switched_off_and_links_out_of_the_package_never_travel(on_disk, tmp_path):
    """TURBOLIFT_DATA_LIMIT=0 ships no data file; a link inside the package to a file outside it (a
    key, say) is never shipped, while a link to a file inside it is."""
    (tmp_path / "id_rsa").write_text("a private key")
    write_files(on_disk, {"calc/table.json": "{}"})
    os.symlink(tmp_path / "id_rsa", on_disk / "calc" / "key.txt")
    os.symlink(on_disk / "calc" / "table.json", on_disk / "calc" / "same_table.json")
    shipped = _fresh_build(on_disk, "0")["files"]
    assert "calc/table.json" in shipped and "calc/same_table.json" in shipped, shipped
    assert "calc/key.txt" not in shipped, shipped
    switched_off = _fresh_build(on_disk, "0", TURBOLIFT_DATA_LIMIT="0")["files"]
    assert [name for name in switched_off if name.startswith("calc/")] == \
        ["calc/__init__.py", "calc/consts.py", "calc/core.py", "calc/extra.py", "calc/helpers.py"]


def test_a_second_build_in_a_fresh_process_comes_from_the_cache_with_the_same_id(on_disk, tmp_path):
    cache = tmp_path / "cache"
    first = _fresh_build(on_disk, cache)
    second = _fresh_build(on_disk, cache)
    assert (first["built"], second["built"]) == (1, 0)
    assert second["id"] == first["id"] == _uncached_id(on_disk)   # byte-identical to a build
    assert "calc/extra.py" in second["files"] and second["requirements"] == {"dill": dill.__version__}
    assert (cache.stat().st_mode & 0o777) == 0o700


def test_the_default_cache_is_under_xdg_cache_home(on_disk, tmp_path):
    xdg = tmp_path / "xdg"
    first = _fresh_build(on_disk, None, XDG_CACHE_HOME=str(xdg))
    assert _fresh_build(on_disk, None, XDG_CACHE_HOME=str(xdg)) == dict(first, built=0)
    directory = xdg / "turbolift" / "caller-bundles"
    assert sorted(p.suffix for p in directory.iterdir()) == [".entry", ".entry"]   # the bundle, the pins
    assert directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("change", ["same size, new content", "same content, new mtime",
                                    "new content, mtime restored"])
def test_a_changed_file_is_built_afresh(on_disk, tmp_path, change):
    cache = tmp_path / "cache"
    before = _fresh_build(on_disk, cache)
    helpers = on_disk / "calc" / "helpers.py"
    recorded = helpers.stat()
    if change != "same content, new mtime":
        helpers.write_text("def twice(x):\n    return x + x\n")   # the same number of bytes
        assert helpers.stat().st_size == recorded.st_size
    if change == "new content, mtime restored":   # as rsync -t or an archive would
        os.utime(helpers, ns=(recorded.st_atime_ns, recorded.st_mtime_ns))
    else:
        _age(helpers, seconds=2 * _AN_HOUR_AGO)
    after = _fresh_build(on_disk, cache)
    assert after["built"] == 1
    assert after["id"] == _uncached_id(on_disk)
    assert (after["id"] == before["id"]) == (change == "same content, new mtime")
    assert _fresh_build(on_disk, cache) == dict(after, built=0)   # and then cached again


def test_a_file_changed_seconds_ago_is_never_taken_from_the_cache(on_disk, tmp_path):
    """File times advance by clock ticks: a same-size rewrite within one would leave them as they were."""
    cache = tmp_path / "cache"
    (on_disk / "calc" / "helpers.py").write_text("def twice(x):\n    return x + x\n")
    racy = {"TEST_RACY_NS": str(_bundle.RACY_NS)}   # the real window
    assert _fresh_build(on_disk, cache, **racy)["built"] == 1
    assert _fresh_build(on_disk, cache, **racy)["built"] == 1


def test_a_deleted_or_a_new_module_is_noticed(on_disk, tmp_path):
    cache = tmp_path / "cache"
    assert _fresh_build(on_disk, cache)["built"] == 1
    (on_disk / "calc" / "extra.py").unlink()
    gone = _fresh_build(on_disk, cache)
    assert gone["built"] == 1 and "calc/extra.py" not in gone["files"]
    assert gone["id"] == _uncached_id(on_disk)
    (on_disk / "calc" / "optional.py").write_text("O = 1\n")   # a lookup that failed now succeeds
    _age(on_disk / "calc" / "optional.py")   # (and no file read before changes)
    new = _fresh_build(on_disk, cache)
    assert new["built"] == 1 and "calc/optional.py" in new["files"]
    assert new["id"] == _uncached_id(on_disk)


def test_a_changed_new_or_deleted_data_file_is_noticed(on_disk, tmp_path):
    cache = tmp_path / "cache"
    table = on_disk / "calc" / "table.json"
    table.write_text("[1]")
    _age(table, on_disk / "calc")
    first = _fresh_build(on_disk, cache)
    assert "calc/table.json" in first["files"] and _fresh_build(on_disk, cache)["built"] == 0
    table.write_text("[2]")   # same size, new content
    _age(table, seconds=2 * _AN_HOUR_AGO)
    changed = _fresh_build(on_disk, cache)
    assert changed["built"] == 1 and changed["id"] != first["id"] and changed["id"] == _uncached_id(on_disk)
    (on_disk / "calc" / "more").mkdir()
    (on_disk / "calc" / "more" / "notes.txt").write_text("n")
    _age(on_disk / "calc" / "more" / "notes.txt", on_disk / "calc" / "more", on_disk / "calc")
    added = _fresh_build(on_disk, cache)
    assert added["built"] == 1 and "calc/more/notes.txt" in added["files"]
    (on_disk / "calc" / "more" / "notes.txt").unlink()
    _age(on_disk / "calc" / "more")
    removed = _fresh_build(on_disk, cache)
    assert removed["built"] == 1 and "calc/more/notes.txt" not in removed["files"]
    assert removed["id"] == _uncached_id(on_disk)


def test_a_package_directory_changed_a_moment_ago_still_comes_from_the_cache(on_disk, tmp_path):
    """The import that writes a package's __pycache__ changes its directory: that must not keep its bundle out
    of the cache (files changed that recently are never trusted; directories are)."""
    cache = tmp_path / "cache"
    racy = {"TEST_RACY_NS": str(_bundle.RACY_NS)}   # the real window
    time.sleep(_bundle.RACY_NS / 1e9 + 0.2)   # until the files written (and aged) are trusted
    assert [_fresh_build(on_disk, cache, **racy)["built"] for _ in range(2)] == [1, 0]
    (on_disk / "calc" / ".touched").write_text("")   # a new entry (hidden: not a data file)
    assert [_fresh_build(on_disk, cache, **racy)["built"] for _ in range(2)] == [1, 0]


def test_a_new_version_of_a_pinned_distribution_is_noticed(tmp_path):
    from conftest import make_installed_library

    site = tmp_path / "lib" / "site-packages"   # (so pinlib is not project code)
    make_installed_library(site, "pinlib", "1.0", "V = 1\n")
    source = write_files(tmp_path / "src", {"uses/__init__.py": "import pinlib\n"})
    _age(site, source)
    cache, path = tmp_path / "cache", {"PYTHONPATH": f"{site}{os.pathsep}{REPO_ROOT}"}
    first = _fresh_build(source, cache, "uses", **path)
    assert first["requirements"] == {"pinlib": "1.0"}
    assert _fresh_build(source, cache, "uses", **path)["built"] == 0
    # An upgrade, as pip does it: the files may not even change, the metadata does.
    shutil.rmtree(site / "pinlib-1.0.dist-info")
    make_installed_library(site, "pinlib", "2.0", "V = 1\n")
    _age(site)
    upgraded = _fresh_build(source, cache, "uses", **path)
    assert upgraded["built"] == 1 and upgraded["requirements"] == {"pinlib": "2.0"}
    assert upgraded["id"] != first["id"]


def test_the_cache_can_be_switched_off(on_disk, tmp_path):
    xdg = tmp_path / "xdg"
    for _ in range(2):
        assert _fresh_build(on_disk, "0", XDG_CACHE_HOME=str(xdg))["built"] == 1
    assert not xdg.exists()


def test_a_cache_directory_that_cannot_be_used_still_builds(on_disk, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    expected = _uncached_id(on_disk)
    for _ in range(2):   # cannot be created
        assert _fresh_build(on_disk, None, XDG_CACHE_HOME=str(not_a_directory)) == \
            {**_fresh_build(on_disk, "0"), "id": expected, "built": 1}


def _split_entry(entry: Path) -> tuple[bytes, dict, bytes]:
    """``(magic, header, data)`` of a cache entry."""
    magic, digest, header, data = entry.read_bytes().split(b"\n", 3)
    return magic, json.loads(header), data


def _write_entry(entry: Path, magic: bytes, header: dict, data: bytes, digest=None) -> None:
    """Write an entry as the cache does (its header digest recomputed, unless given)."""
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    digest = digest if digest is not None else hashlib.sha256(encoded).hexdigest().encode()
    entry.write_bytes(magic + b"\n" + digest + b"\n" + encoded + b"\n" + data)


def _bundle_entry(cache: Path) -> Path:
    entries = [p for p in cache.rglob("*.entry")]
    return max(entries, key=lambda p: p.stat().st_size)   # (the other one holds the pins)


def _damage(entry: Path, how: str) -> None:
    blob = entry.read_bytes()
    if how == "truncated":
        entry.write_bytes(blob[:len(blob) // 2])
    elif how == "garbage":
        entry.write_bytes(os.urandom(len(blob)))
    elif how == "archive flipped":
        entry.write_bytes(blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:])
    elif how == "header flipped":
        magic, digest, header, data = blob.split(b"\n", 3)
        entry.write_bytes(b"\n".join([magic, digest, header.replace(b'"calc', b'"cal_', 1), data]))
    else:   # a well-formed header of the wrong shape, its digest right
        magic, parsed, data = _split_entry(entry)
        parsed["lookups"] = 7
        _write_entry(entry, magic, parsed, data)


@pytest.mark.parametrize("how", ["truncated", "garbage", "archive flipped", "header flipped",
                                 "header of the wrong shape"])
def test_a_damaged_entry_is_ignored_and_replaced(on_disk, tmp_path, how):
    cache = tmp_path / "cache"
    first = _fresh_build(on_disk, cache)
    _damage(_bundle_entry(cache), how)
    assert _fresh_build(on_disk, cache) == first                  # built again, the same
    assert _fresh_build(on_disk, cache) == dict(first, built=0)   # and the entry repaired


@pytest.mark.parametrize("records", ["no imports", "not records"])
@pytest.mark.parametrize("digest", ["left as it was", "recomputed"])
def test_damaged_import_records_never_spoil_a_rebuild(on_disk, tmp_path, records, digest):
    """On a miss, the entry's import records spare parsing unchanged files: damaged ones are not used."""
    cache = tmp_path / "cache"
    first = _fresh_build(on_disk, cache)
    entry = _bundle_entry(cache)
    magic, header, data = _split_entry(entry)
    count = len(json.loads(header["records"]))
    wrong = [[] for _ in range(count)] if records == "no imports" else [["bad"] for _ in range(count)]
    header["records"] = json.dumps(wrong)
    header["id"] = "sha256:" + "0" * 64   # not a hit: a miss, which uses the records
    if digest == "recomputed":
        if records == "no imports":
            return   # (records of the right shape, in an entry of this user's: trusted, as its files are)
        _write_entry(entry, magic, header, data)
    else:
        _write_entry(entry, magic, header, data, digest=entry.read_bytes().split(b"\n", 2)[1])
    assert _fresh_build(on_disk, cache) == first
    assert _fresh_build(on_disk, cache) == dict(first, built=0)


def test_a_rebuild_that_fails_with_the_records_of_an_entry_is_done_again_without_them(on_disk, tmp_path):
    cache = tmp_path / "cache"
    first = _fresh_build(on_disk, cache)
    entry = _bundle_entry(cache)
    magic, header, data = _split_entry(entry)
    _write_entry(entry, magic, dict(header, id="sha256:" + "0" * 64), data)   # a miss, its records read
    poisoned = _BUILD_ONCE.replace("built = []", textwrap.dedent('''
        from turbolift._caller import bundle_entries
        real_known = bundle_entries.known_records
        bundle_entries.known_records = lambda header: {
            path: (identity, [["not", "a", "record"]]) for path, (identity, _) in real_known(header).items()}
        built = []'''))
    done = subprocess.run([sys.executable, "-c", poisoned, str(on_disk), "calc.core"], cwd=on_disk,
                          env=dict(os.environ, TURBOLIFT_BUNDLE_CACHE=str(cache), TEST_RACY_NS="0"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == first   # (built once: the walk with the records failed)


def test_the_cache_keeps_the_most_recently_used_entries(tmp_path, monkeypatch):
    from turbolift._caller import bundle_cache

    root = tmp_path / "cache"
    monkeypatch.setenv("TURBOLIFT_BUNDLE_CACHE", str(root))
    monkeypatch.setattr(bundle_cache, "MAX_ENTRIES", 10)
    limit = bundle_cache.MAX_ENTRIES

    def path(index):
        return root / bundle_cache.entry_name(f"key {index}")

    for index in range(limit + 6):
        assert bundle_cache.store(f"key {index}", {"n": index}, b"data %d" % index)
        os.utime(path(index), (1000 + index, 1000 + index))
    assert [index for index in range(limit + 6) if path(index).exists()] == list(range(6, limit + 6))
    assert bundle_cache.load("key 6") == ({"n": 6, "key": "key 6", "data_sha256": ANY, "data_size": 6},
                                          b"data 6")   # used: now the most recent
    stale = root / ".tmp-crashed-writer"
    stale.write_bytes(b"half")
    os.utime(stale, (1000, 1000))
    assert bundle_cache.store("one more", {"n": -1})
    assert path(6).exists() and not path(7).exists() and not stale.exists()
    assert len(list(root.iterdir())) == limit


def test_the_cache_is_bounded_by_bytes_and_holds_thousands_of_entries(tmp_path, monkeypatch):
    from turbolift._caller import bundle_cache

    assert bundle_cache.MAX_ENTRIES >= 4096 and bundle_cache.MAX_BYTES == 512 * 1024 * 1024
    root = tmp_path / "cache"
    monkeypatch.setenv("TURBOLIFT_BUNDLE_CACHE", str(root))
    monkeypatch.setattr(bundle_cache, "MAX_BYTES", 10_000)
    for index in range(12):
        assert bundle_cache.store(f"key {index}", {"n": index}, bytes(1000))
        os.utime(root / bundle_cache.entry_name(f"key {index}"), (1000 + index, 1000 + index))
    kept = [index for index in range(12) if (root / bundle_cache.entry_name(f"key {index}")).exists()]
    assert kept == list(range(12 - len(kept), 12)) and 5 <= len(kept) < 10
    assert sum(p.stat().st_size for p in root.iterdir()) <= 10_000


def test_a_program_of_a_hundred_modules_is_all_taken_from_the_cache(tmp_path):
    """More bundles than the entries the cache used to keep (64): none is built in a second run."""
    modules = {f"mod{i}.py": f"import mod{i - 1}\n" if i else "" for i in range(100)}
    source = write_files(tmp_path / "src", modules)
    script = textwrap.dedent('''
        import importlib, json, os, sys
        sys.path.insert(0, sys.argv[1])
        from turbolift._caller import bundling, pins
        bundling.RACY_NS = pins.RACY_NS = 0
        built = []
        real_build = bundling.build
        bundling.build = lambda *args, **kwargs: (built.append(1), real_build(*args, **kwargs))[1]
        for i in range(100):
            importlib.import_module(f"mod{i}")
            bundling.module_bundle(f"mod{i}")
        print(len(built))
    ''')
    environment = dict(os.environ, TURBOLIFT_BUNDLE_CACHE=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-c", script, str(source)], env=environment, cwd=source,
                           capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert [run.stdout.strip() for run in runs] == ["100", "0"], runs[-1].stderr


# -- the cache is this user's alone: what it holds is shipped and run -------------

_ANOTHER_UID = 65534   # nobody
_as_root = pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0,
                              reason="needs root, to make files of another user's (os.chown)")


def _plant(entry: Path) -> str:
    """Rewrite ``entry`` as an attacker would: the header kept, the archive's code replaced, ids redone."""
    magic, header, data = _split_entry(entry)
    original, planted = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(planted, "w") as archive:
        for name in original.namelist():
            archive.writestr(name, b"def work(x):\n    return 666\n" if name == "calc/core.py"
                             else original.read(name))
    data = planted.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    header.update(id="sha256:" + digest, data_sha256=digest, data_size=len(data))
    _write_entry(entry, magic, header, data)
    return header["id"]


def test_a_cache_others_can_write_holds_a_private_directory_of_this_users(on_disk, tmp_path):
    shared = tmp_path / "shared"   # as /tmp, or a volume mounted 0777
    shared.mkdir()
    shared.chmod(0o777)
    first = _fresh_build(on_disk, shared)
    assert _fresh_build(on_disk, shared) == dict(first, built=0)
    private = shared / f"turbolift-{os.getuid()}"
    assert [p.name for p in shared.iterdir()] == [private.name]   # nothing else written there
    info = private.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (os.getuid(), 0o700)
    assert sorted(p.suffix for p in private.iterdir()) == [".entry", ".entry"]


@pytest.mark.parametrize("how", ["group-writable", "a link", pytest.param("another user's", marks=_as_root)])
def test_an_entry_others_could_have_written_is_never_used(on_disk, tmp_path, how):
    cache = tmp_path / "cache"
    first = _fresh_build(on_disk, cache)
    entry = _bundle_entry(cache)
    planted = _plant(entry)
    if how == "group-writable":
        entry.chmod(0o664)
    elif how == "a link":
        target = tmp_path / "planted.entry"
        entry.rename(target)
        entry.symlink_to(target)
    else:
        os.chown(entry, _ANOTHER_UID, _ANOTHER_UID)
    again = _fresh_build(on_disk, cache)
    assert again == dict(first, built=1) and again["id"] != planted


@_as_root
def test_directories_swapped_by_another_user_never_feed_a_planted_entry(tmp_path, monkeypatch):
    """Another user exchanges the cache directory with one of theirs, over and over, as a call loads."""
    import ctypes
    import threading

    from turbolift._caller import bundle_cache

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("no renameat2 in this C library")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cache, theirs = shared / "cache", shared / "theirs"
    monkeypatch.setenv("TURBOLIFT_BUNDLE_CACHE", str(cache))
    assert bundle_cache.store("key", {"n": 1}, b"the real bundle")
    theirs.mkdir()
    shutil.copy(cache / bundle_cache.entry_name("key"), theirs)
    entry = theirs / bundle_cache.entry_name("key")
    magic, header, _ = _split_entry(entry)
    header.update(data_sha256=hashlib.sha256(b"planted").hexdigest(), data_size=len(b"planted"))
    _write_entry(entry, magic, header, b"planted")
    for path in (theirs, entry):
        os.chown(path, _ANOTHER_UID, _ANOTHER_UID)
    stop = threading.Event()

    def attacker():
        while not stop.is_set():   # RENAME_EXCHANGE (2): both names stay, the directories swap
            libc.renameat2(-100, str(cache).encode(), -100, str(theirs).encode(), 2)

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    try:
        loaded = [bundle_cache.load("key") for _ in range(3000)]
    finally:
        stop.set()
        thread.join()
    assert {None if each is None else each[1] for each in loaded} <= {None, b"the real bundle"}
    assert any(each is not None for each in loaded)


# -- what a bundle pins, and builds that never fail because of the cache -----------

def test_an_egg_info_rewritten_in_place_is_noticed(tmp_path):
    """setuptools rewrites an ``*.egg-info``'s PKG-INFO in place: the folder's name and mtime stay."""
    root = tmp_path / "env"
    source = write_files(tmp_path / "src", {"uses/__init__.py": "import edlib\n"})
    write_files(root, {"pyvenv.cfg": "home = /usr\n",   # (so edlib is not project code)
                       "src/edlib/edlib/__init__.py": "V = 1\n",
                       "src/edlib/edlib.egg-info/PKG-INFO":
                           "Metadata-Version: 2.1\nName: edlib\nVersion: 1.0\n",
                       "src/edlib/edlib.egg-info/top_level.txt": "edlib\n"})
    _age(root, source)
    cache, path = tmp_path / "cache", {"PYTHONPATH": f"{root / 'src' / 'edlib'}{os.pathsep}{REPO_ROOT}"}
    first = _fresh_build(source, cache, "uses", **path)
    assert first["requirements"] == {"edlib": "1.0"}
    assert _fresh_build(source, cache, "uses", **path)["built"] == 0
    info = root / "src" / "edlib" / "edlib.egg-info"
    folder = info.stat()
    (info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: edlib\nVersion: 2.0\n")
    _age(info / "PKG-INFO", seconds=2 * _AN_HOUR_AGO)
    os.utime(info, ns=(folder.st_atime_ns, folder.st_mtime_ns))
    upgraded = _fresh_build(source, cache, "uses", **path)
    assert upgraded["requirements"] == {"edlib": "2.0"} and upgraded["built"] == 1


_ODD_PROGRAM = '''
import os, pathlib, sys, tempfile
sys.path.insert(0, sys.argv[1])
import calc.core
from turbolift._caller import bundling, pins
bundling.RACY_NS = pins.RACY_NS = 0
built = []
real_build = bundling.build
bundling.build = lambda *args, **kwargs: (built.append(1), real_build(*args, **kwargs))[1]
ids = [bundling.module_bundle("calc.core").id]
sys.path.append(pathlib.Path("/nonexistent"))   # not a str: import ignores it, so does the cache
ids.append(bundling._module_bundle("calc.core").id)
sys.path.insert(0, "")
gone = tempfile.mkdtemp()
os.chdir(gone)
os.rmdir(gone)   # the working directory is deleted: no cache, still a build
ids.append(bundling._module_bundle("calc.core").id)
script = bundling.bundle_for_script(os.path.join(sys.argv[1], "calc", "core.py"))
print(len(set(ids)), len(built), script.manifest["requirements"])
'''


@pytest.mark.parametrize("cache", ["on", "0"])
def test_odd_sys_path_entries_and_a_deleted_working_directory_never_fail_a_build(on_disk, tmp_path, cache):
    done = subprocess.run([sys.executable, "-c", _ODD_PROGRAM, str(on_disk)], cwd=on_disk,
                          env=dict(os.environ, TURBOLIFT_BUNDLE_CACHE=str(tmp_path / "cache") if cache == "on"
                                   else cache), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    builds = "3" if cache == "on" else "4"   # (the script too; with the cache, the second is a hit)
    assert done.stdout.split(None, 2) == ["1", builds, f"{{'dill': '{dill.__version__}'}}\n"]


def test_a_file_whose_ctime_is_recent_is_never_trusted_unread(tmp_path):
    """Content rewritten and its mtime set back (rsync -t): only the ctime tells it is recent."""
    path = tmp_path / "mod.py"
    path.write_text("A = 1\n")
    _age(path)
    assert time.time_ns() - path.stat().st_mtime_ns > _bundle.RACY_NS   # the mtime is old, the ctime new
    assert _bundle._identity(str(path)) is None


def _names_by_walking(source: str, module_name: str, is_package: bool) -> set[str]:
    """The reference: the scan as it was before the cache (every node of ``ast.walk``), verbatim."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    package = module_name if is_package else module_name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                if node.level - 1 > len(base_parts):
                    continue
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base:
                continue
            parts = base.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            # `from pkg import name` may name a submodule
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def test_the_import_scan_finds_what_walking_the_whole_tree_finds():
    from turbolift._caller.import_scan import import_records, imported_names

    tricky = textwrap.dedent('''
        import a.b.c, d as e
        from . import sibling
        from ..up import thing
        from ...too.far import nothing
        from .star import *
        class K:
            import in_class
            def method(self):
                try:
                    import in_try
                except ValueError:
                    import in_handler
                else:
                    import in_else
                finally:
                    from .fin import x
        async def f():
            async with g() as h:
                import in_with
            while True:
                import in_while
            for _ in ():
                pass
            else:
                import in_for_else
            match h:
                case 1:
                    import in_case
        if TYPE_CHECKING:
            from typing_only import T
        try:
            pass
        except* OSError:
            import in_star_handler
        lambda: __import__("not_a_statement")
        "import not_code"
    ''')
    sources = [tricky] + [p.read_text() for p in sorted((REPO_ROOT / "turbolift").rglob("*.py"))]
    for source in sources:
        for module, is_package in (("pkg.sub.mod", False), ("pkg.sub", True), ("top", False)):
            assert imported_names(import_records(source), module, is_package) == \
                _names_by_walking(source, module, is_package)


def test_pins_are_what_importlib_metadata_says(tmp_path, monkeypatch):
    import importlib_metadata

    from turbolift._caller import pins

    monkeypatch.setenv("TURBOLIFT_BUNDLE_CACHE", str(tmp_path / "cache"))
    tops = {"dill", "grpc", "pytest", "yaml", "no_such_module_here"}
    every = importlib_metadata.packages_distributions()
    expected = {dist: importlib_metadata.version(dist) for top in tops for dist in every.get(top, [])}
    assert pins.pinned_requirements(tops) == expected
    pins._memo.clear()   # as a fresh process: from the disk this time
    assert pins.pinned_requirements(tops) == expected


_PROVIDERS_PROGRAM = '''
import json, sys
import importlib_metadata
from turbolift._caller import pins
everything = importlib_metadata.packages_distributions()
names = set(everything) | {"decl_a", "decl_b", "infpkg", "infmod", "gone", "bin", "nowhere", "egglib",
                           "egglib.pth"}
asked = pins._providers(names)
print(json.dumps({"same": asked == {name: everything.get(name, []) for name in names},
                  "names": len(names), "some": {name: asked[name] for name in sorted(names) if name in
                  ("decl_a", "decl_b", "infpkg", "infmod", "gone", "bin", "nowhere", "egglib")}}))
'''


def test_distributions_are_looked_up_for_the_names_asked_exactly_as_the_library_maps_them(tmp_path):
    """``pins._providers`` reads only what the names asked for need; its answer is the library's own
    ``packages_distributions()``'s, for every name of this environment and for distributions with a
    ``top_level.txt`` (a name twice), with none (names inferred from RECORD, missing files dropped),
    and with only an egg-info's SOURCES.txt."""
    site = tmp_path / "lib" / "site-packages"
    write_files(site, {
        "decl_a/__init__.py": "", "decl_b.py": "",
        "declared-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: Declared\nVersion: 1.0\n",
        "declared-1.0.dist-info/top_level.txt": "decl_a\ndecl_b\ndecl_a\n",
        "infpkg/__init__.py": "", "infmod.py": "",
        "inferred-2.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: inferred\nVersion: 2.0\n",
        "inferred-2.0.dist-info/RECORD": "infpkg/__init__.py,,\ninfmod.py,sha256=x,0\ngone/__init__.py,,\n"
                                         "../../bin/tool,,\n\"infpkg/a,b.py\",,\ninferred-2.0.dist-info/RECORD,,\n",
        "egglib/__init__.py": "",
        "egglib.egg-info/PKG-INFO": "Metadata-Version: 1.1\nName: egglib\nVersion: 0.1\n",
        "egglib.egg-info/SOURCES.txt": "egglib/__init__.py\nsetup.py\negglib.pth\n", "egglib.pth": "",
    })
    out = subprocess.run([sys.executable, "-c", _PROVIDERS_PROGRAM], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO_ROOT}"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["same"] is True and report["names"] > 20, report
    assert report["some"] == {"decl_a": ["Declared", "Declared"], "decl_b": ["Declared"],
                              "infpkg": ["inferred"], "infmod": ["inferred"], "gone": [], "bin": [],
                              "nowhere": [], "egglib": ["egglib"]}, report
