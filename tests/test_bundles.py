"""Bundles: content-addressed, project code only, pinned third-party versions."""
from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from pathlib import Path

import dill
import pytest
from conftest import write_files

from turbolift._caller import bundling as _bundle
from turbolift._worker.bundle_store import BundleStore
from turbolift.errors import BundleError, ConfigurationError


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
    return {name for name, _ in bundle.files}


def test_bundle_holds_the_module_and_its_project_imports_only(project):
    import calc.core  # noqa: F401  (as the program would have)

    bundle = _bundle._module_bundle("calc.core")
    assert _names(bundle) == {"calc/__init__.py", "calc/core.py", "calc/helpers.py", "calc/consts.py",
                              _bundle.MANIFEST}
    manifest = bundle.manifest
    assert manifest["requirements"] == {"dill": dill.__version__}  # json is stdlib: not pinned
    assert manifest["python"] == "%d.%d" % sys.version_info[:2]
    assert manifest["modules"]["calc.helpers"] == "calc/helpers.py"


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
