"""Regenerate the gRPC code from ``proto/`` (``tox -e proto``).

Run from the repository root: ``python -m turbolift._wire.protogen [OUTPUT_DIR]``.
Needs grpcio-tools (the ``proto`` extra). The test suite regenerates into a
temporary directory and fails when the committed code has drifted.
"""
from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent.parent / "proto"
PROTO_FILES = ["turbolift/v1/worker.proto"]


def generate(output: Path) -> list[Path]:
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={output}", f"--pyi_out={output}",
            f"--grpc_python_out={output}", *(str(PROTO_ROOT / name) for name in PROTO_FILES)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see its message above")
    return sorted(output.glob("turbolift/v1/*_pb2*.py*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT.parent
    for path in generate(target):
        print(path)
