"""The caller's bytecode travels beside a bundle's sources, so a fresh worker need not compile them.

What is shipped must be what the caller's own import would run for the
shipped source, and nothing else; a real worker with an empty cache then
runs it.
"""
from __future__ import annotations

import importlib
import importlib.util
import io
import marshal
import os
import py_compile
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import distributed_on, write_files

from turbolift._caller import bundling
from turbolift._caller.bytecode import shipped_pyc
from turbolift._wire.bundle_format import BYTECODE, MANIFEST, bytecode_index, pack_bytecode, python_tag
from turbolift._worker.bundle_store import BundleStore

_MAGIC = importlib.util.MAGIC_NUMBER
_AN_HOUR_AGO = 3600

pytestmark = pytest.mark.skipif(sys.implementation.cache_tag is None, reason="this Python writes no bytecode")


def _age(*paths: Path) -> None:
    past = time.time() - _AN_HOUR_AGO
    for path in paths:
        os.utime(path, (past, past))


def _compile(path: Path, mode=py_compile.PycInvalidationMode.TIMESTAMP) -> bytes:
    cached = importlib.util.cache_from_source(str(path))
    py_compile.compile(str(path), cfile=cached, doraise=True, invalidation_mode=mode)
    return Path(cached).read_bytes()


def _shipped(bundle) -> dict[str, bytes]:
    """The bundle's bytecode: source entry -> pyc."""
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
        if BYTECODE not in archive.namelist():
            return {}
        blob = archive.read(BYTECODE)
    index = bytecode_index(io.BytesIO(blob), len(blob))
    return {name: blob[offset:offset + size] for name, (offset, size) in index.items()}


@pytest.fixture(autouse=True)
def trusted_at_once(monkeypatch):
    """Files the tests wrote a moment ago (their ctime is now) are trusted unread, as older ones are."""
    monkeypatch.setattr(bundling, "RACY_NS", 0)


@pytest.fixture
def forget_modules():
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.partition(".")[0].startswith("bc_"):
            del sys.modules[name]


def test_a_bundle_ships_the_callers_bytecode_re_headed_to_check_the_source_beside_it(
        tmp_path, monkeypatch, forget_modules):
    write_files(tmp_path, {"bc_one/__init__.py": "", "bc_one/core.py": "def work(x):\n    return x + 1\n"})
    sources = [tmp_path / "bc_one/__init__.py", tmp_path / "bc_one/core.py"]
    _age(*sources)
    compiled = {path.name: _compile(path) for path in sources}
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("bc_one.core")

    bundle = bundling._walk_and_build("bc_one.core", None)[1]

    shipped = _shipped(bundle)
    assert set(shipped) == {"bc_one/__init__.py", "bc_one/core.py"}
    for path in sources:
        pyc = shipped[f"bc_one/{path.name}"]
        assert pyc[:4] == _MAGIC
        assert int.from_bytes(pyc[4:8], "little") == 0b11          # hash-based, checked against the source
        assert pyc[8:16] == importlib.util.source_hash(path.read_bytes())
        assert pyc[16:] == compiled[path.name][16:]                 # the caller's own code, not recompiled


def test_bytecode_the_callers_import_would_not_take_for_the_shipped_bytes_stays_home(tmp_path):
    path = tmp_path / "mod.py"

    def write(text: str, aged: bool = True) -> bytes:
        path.write_text(text)
        if aged:
            _age(path)
        return path.read_bytes()

    def ships(source: bytes, identity="now") -> bool:
        identity = bundling._identity(str(path)) if identity == "now" else identity
        return shipped_pyc(str(path), source, identity) is not None

    source = write("A = 1\n")
    assert not ships(source)                                        # no .pyc at all
    _compile(path)
    assert ships(source)
    assert not ships(source, identity=None)                         # changed too recently to trust
    before = bundling._identity(str(path))
    write("A = 9\n")                                                # edited after the walk read it
    _compile(path)
    assert not ships(source, identity=before)
    source = write("A = 22\n")                                      # edited since it was compiled
    assert not ships(source)

    source = write("A = 3\n", aged=False)                           # compiled in the second of an edit
    _compile(path)
    stamp = path.stat().st_mtime_ns
    os.utime(importlib.util.cache_from_source(str(path)), ns=(stamp, stamp))
    assert not ships(source)

    source = write("A = 4\n")
    _compile(path, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    assert ships(source)
    source = write("A = 5\n")                                       # an unchecked hash of other bytes
    assert not ships(source)
    _compile(path, py_compile.PycInvalidationMode.CHECKED_HASH)
    assert ships(source)

    cached = Path(importlib.util.cache_from_source(str(path)))
    good = cached.read_bytes()
    cached.write_bytes(good[:4] + (0b111).to_bytes(4, "little") + good[8:])   # flags import refuses
    assert not ships(source)
    cached.write_bytes(b"\x00\x00\r\n" + good[4:])                      # another interpreter's
    assert not ships(source)


def test_a_fresh_worker_runs_the_shipped_bytecode_as_the_callers_import_does(
        tmp_path, monkeypatch, forget_modules):
    """The bytecode here is not the source's: a .pyc whose header matches the source, which Python's
    import takes (it compares the source's mtime and size only). The caller runs it; so must a worker,
    which can only get it from the bundle: its cache is new and it would compile the source."""
    write_files(tmp_path / "src", {
        "bc_three/__init__.py": "",
        "bc_three/core.py": "def which():\n    return 'compiled from the source'\n",
        "bc_three/api.py": """
            import os

            from turbolift import on

            from . import core

            @on()
            def ask():
                return core.which(), os.getpid()
        """,
    })
    core = tmp_path / "src/bc_three/core.py"
    _age(*(tmp_path / "src/bc_three").glob("*.py"))
    info = core.stat()
    code = compile("def which():\n    return 'the bytecode'\n", str(core), "exec")
    header = _MAGIC + (0).to_bytes(4, "little") + (int(info.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") \
        + (info.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    cached = Path(importlib.util.cache_from_source(str(core)))
    cached.parent.mkdir(exist_ok=True)
    cached.write_bytes(header + marshal.dumps(code))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    api = importlib.import_module("bc_three.api")
    assert api.ask() == ("the bytecode", os.getpid())               # locally, as Python's import has it
    for name in ("bc_three.api", "bc_three.core", "bc_three"):
        del sys.modules[name]

    with distributed_on(1, tmp_path / "worker-cache"):
        api = importlib.import_module("bc_three.api")
        answer, where = api.ask()
    assert where != os.getpid() and answer == "the bytecode"


def test_a_restarted_worker_keeps_an_unpacked_bundle_with_bytecode(tmp_path, monkeypatch, forget_modules):
    write_files(tmp_path / "src", {"bc_four/__init__.py": "", "bc_four/core.py": "A = 1\n"})
    sources = list((tmp_path / "src/bc_four").glob("*.py"))
    _age(*sources)
    for path in sources:
        _compile(path)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    importlib.import_module("bc_four.core")
    bundle = bundling._walk_and_build("bc_four.core", None)[1]
    assert _shipped(bundle)
    store = BundleStore(str(tmp_path / "cache"))
    store.put(bundle.id, len(bundle.data), [bundle.data])
    unpacked = Path(store.load(bundle.id).path)
    assert (unpacked / "bc_four/core.py").exists()
    assert not (unpacked / "bc_four/__pycache__").exists()                  # no .pyc file is made of it
    assert (unpacked / BYTECODE).is_file()
    own = unpacked / "bc_four/__pycache__/core.opt-9.pyc"
    own.parent.mkdir()
    own.write_bytes(b"")                                                    # as the worker's own import may

    again = BundleStore(str(tmp_path / "cache")).load(bundle.id)           # a new worker, the same cache
    assert Path(again.path) == unpacked and own.exists()                   # not unpacked anew

    (unpacked / "bc_four/planted.py").write_text("A = 666\n")                # anything else: unpacked anew
    BundleStore(str(tmp_path / "cache")).load(bundle.id)
    assert not (unpacked / "bc_four/planted.py").exists()


def _crafted(tmp_path: Path, module: str, source: str, bytecode: dict) -> tuple[str, bytes]:
    """A bundle of the module ``module`` (``source``) and the entry ``BYTECODE`` packing ``bytecode``."""
    import hashlib
    import json

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        manifest = {"format": 1, **python_tag(), "modules": {module: f"{module}.py"}}
        archive.writestr(MANIFEST, json.dumps(manifest))
        archive.writestr(f"{module}.py", source)
        archive.writestr(BYTECODE, pack_bytecode(bytecode))
    data = buffer.getvalue()
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _pyc(code_source: str, source: str) -> bytes:
    """A checked hash-based pyc of ``code_source`` that says it was compiled from ``source``."""
    return _MAGIC + (0b11).to_bytes(4, "little") + importlib.util.source_hash(source.encode()) + \
        marshal.dumps(compile(code_source, "m.py", "exec"))


@pytest.mark.parametrize("where", ["absolute", "relative", "pycache prefix"])
def test_a_worker_reads_a_modules_shipped_bytecode_wherever_its_cache_is(tmp_path, monkeypatch, where,
                                                                        forget_modules):
    """The shipped pyc is not the source's compilation, so the answer says which one import took."""
    module = "bc_where_" + where.replace(" ", "_")
    source = "def which():\n    return 'compiled from the source'\n"
    bundle_id, data = _crafted(tmp_path, module, source,
                               {f"{module}.py": _pyc("def which():\n    return 'the bytecode'\n", source)})
    monkeypatch.chdir(tmp_path)
    if where == "pycache prefix":
        monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "prefix"))
    store = BundleStore("cache" if where == "relative" else str(tmp_path / "cache"))
    store.put(bundle_id, len(data), [data])
    assert store.load(bundle_id).resolve(module, "which")() == "the bytecode"


def test_a_damaged_shipped_pyc_fails_every_import_of_its_module_as_a_damaged_pyc_file_does(
        tmp_path, forget_modules):
    source = "def which():\n    return 'compiled from the source'\n"
    damaged = _pyc("X = 1\n", source)[:16] + b"\xff" * 20   # a right header, code that is not code
    bundle_id, data = _crafted(tmp_path, "bc_damaged", source, {"bc_damaged.py": damaged})
    store = BundleStore(str(tmp_path / "cache"))
    store.put(bundle_id, len(data), [data])
    loaded = store.load(bundle_id)
    for _ in range(2):
        with pytest.raises((ValueError, EOFError)):
            loaded.resolve("bc_damaged", "which")
    assert not (Path(loaded.path) / "__pycache__").exists()


@pytest.mark.parametrize("damage, said", [
    (lambda blob: blob[:-3], "ends inside an entry"),
    (lambda blob: blob[:blob.index(b"\n") + 4], "ends inside an entry's header"),
    (lambda blob: b"x" + blob, "does not start as it should"),
    (lambda blob: blob + blob[blob.index(b"\n") + 1:], "twice"),
    (lambda blob: pack_bytecode({"m.py": b"A = 1", "elsewhere.py": b"B = 2"}), "not a source file"),
])
def test_a_bundle_whose_bytecode_is_damaged_is_refused_at_upload(tmp_path, damage, said):
    import hashlib
    import json

    from turbolift.errors import BundleError

    blob = pack_bytecode({"m.py": b"A = 1", "n.py": b"B = 2"})
    index = bytecode_index(io.BytesIO(blob), len(blob))
    assert {name: blob[at:at + size] for name, (at, size) in index.items()} == \
        {"m.py": b"A = 1", "n.py": b"B = 2"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MANIFEST, json.dumps({"format": 1, **python_tag()}))
        archive.writestr("m.py", "A = 1\n")
        archive.writestr("n.py", "B = 2\n")
        archive.writestr(BYTECODE, damage(blob))
    data = buffer.getvalue()
    bundle_id = "sha256:" + hashlib.sha256(data).hexdigest()
    store = BundleStore(str(tmp_path / "store"))
    with pytest.raises(BundleError, match=f"bytecode .*{said}"):
        store.put(bundle_id, len(data), [data])
    assert not store.has(bundle_id) and os.listdir(store.root) == []
