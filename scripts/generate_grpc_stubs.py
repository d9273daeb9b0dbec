#!/usr/bin/env python3
"""Regenerate ``service/grpc/generated/`` from the Open Inference Protocol's gRPC .proto.

The stubs are shipped, not built at install time, so that installing the service
needs no protoc. This script is how they were made; ``service/grpc/generated/README.md``
says where the .proto comes from and why this grpcio-tools::

    python3 -m venv /tmp/stubs && /tmp/stubs/bin/pip install grpcio-tools==1.80.1
    /tmp/stubs/bin/python scripts/generate_grpc_stubs.py path/to/open_inference_grpc.proto

It refuses another .proto (its SHA-256 is pinned below) and another grpcio-tools, so
that running it again gives the files in the repository byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "service/grpc/generated"
PROTO_NAME = "open_inference_grpc.proto"
#: kserve/open-inference-protocol, specification/protocol/open_inference_grpc.proto as
#: of commit d49cc23f89d709d87b210ef9449e273ae243984e (unchanged since eeb043e2).
PROTO_SHA256 = "0f715460d60b014a23e06ac8e768cfa3d8336221cdb66bd7aeeab6dc27620b0f"
#: Its protoc writes protobuf 6.31.1 gencode, which protobuf 6.31.1 and later (7.x too)
#: load; grpcio-tools 1.81 and later write gencode only protobuf 7 loads, which
#: tritonclient[grpc] (protobuf < 7) cannot share a process with.
GRPCIO_TOOLS = "1.80.1"
#: protoc registers the messages in protobuf's default pool, where another copy of the
#: protocol (tritonclient's, KServe's) in the same process clashes on every name
#: ("duplicate symbol 'inference.ServerLiveRequest'"): the module gets a pool of its own.
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def generate(proto: Path, out: Path) -> None:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    digest = hashlib.sha256(proto.read_bytes()).hexdigest()
    if digest != PROTO_SHA256:
        sys.exit(f"{proto}: sha256 {digest}, expected {PROTO_SHA256} (see the README there)")
    if version("grpcio-tools") != GRPCIO_TOOLS:
        sys.exit(f"grpcio-tools {version('grpcio-tools')} installed; use {GRPCIO_TOOLS}")
    with tempfile.TemporaryDirectory() as tmp:
        # The .proto at the package's path, so that the generated modules import each
        # other as service.grpc.generated.*.
        source = Path(tmp, "in", PACKAGE, PROTO_NAME)
        source.parent.mkdir(parents=True)
        shutil.copyfile(proto, source)
        target = Path(tmp, "out")
        target.mkdir()
        # The .proto imports nothing, not even protobuf's well-known types.
        argv = ["protoc", f"-I{Path(tmp, 'in')}", f"--python_out={target}"]
        argv += [f"--pyi_out={target}", f"--grpc_python_out={target}"]
        if protoc.main([*argv, str(source)]) != 0:
            sys.exit("protoc failed")
        for made in sorted(Path(target, PACKAGE).iterdir()):
            text = made.read_text(encoding="utf-8")
            if made.name.endswith("_pb2.py"):
                if text.count(DEFAULT_POOL) != 1:
                    sys.exit(f"{made.name}: expected one {DEFAULT_POOL!r}")
                text = text.replace(DEFAULT_POOL, PRIVATE_POOL)
            (out / made.name).write_text(text, encoding="utf-8")
            print(f"wrote {out / made.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("proto", type=Path, help=f"the protocol's {PROTO_NAME}")
    args = parser.parse_args()
    generate(args.proto, ROOT / PACKAGE)


if __name__ == "__main__":
    main()
