"""Build `generated/` from `proto/` alone: Python stubs, typed `.pyi` stubs and Envoy's descriptor set.

Run by `make proto` (`python -m scripts.generate_protos`). The output is committed; `make lint`
builds it again (`scripts/check_generated.py`) and fails on any difference.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "generated"
DESCRIPTOR_NAME = "crosscompute.binpb"


def include_roots() -> list[str]:
    """Where `google/api/*.proto` (googleapis-common-protos) and the well-known types live."""
    grpc_tools_protos = Path(str(resources.files("grpc_tools") / "_proto"))
    import google.api.annotations_pb2 as annotations

    googleapis = Path(annotations.__file__).resolve().parent.parent.parent
    return [str(PROTO_ROOT), str(googleapis), str(grpc_tools_protos)]


def run_protoc(args: list[str]) -> None:
    includes = [f"--proto_path={root}" for root in include_roots()]
    code = protoc.main(["grpc_tools.protoc", *includes, *args])
    if code != 0:
        sys.exit(f"protoc failed ({code}): {' '.join(args)}")


def generate(out: Path) -> int:
    """Write every generated file into `out`; return how many proto files there were."""
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    shutil.rmtree(out / "crosscompute", ignore_errors=True)
    out.mkdir(exist_ok=True)
    # Python for our files only: generating google/* would shadow googleapis-common-protos.
    run_protoc(
        [
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *sources,
        ]
    )
    # The descriptor set Envoy loads, with google/rpc status and details so errors convert.
    run_protoc(
        [
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out / DESCRIPTOR_NAME}",
            *sources,
            "google/rpc/status.proto",
            "google/rpc/error_details.proto",
        ]
    )
    for package_dir in {p.parent for p in (out / "crosscompute").rglob("*.py")} | {out / "crosscompute"}:
        (package_dir / "__init__.py").touch()
    (out / "crosscompute" / "py.typed").touch()
    return len(sources)


def main() -> None:
    count = generate(OUT)
    print(f"generated {count} proto files into {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
