"""`emomesh` command line: run the embedded stack, analyse media through it, render model configs.

emomesh up                         start tritonserver, redis-server and all services, restart any that
                                   exits; Ctrl-C stops
emomesh demo                       start the stack, analyse the bundled samples, stop
emomesh analyze --image face.jpg   analyse a file through a running stack
emomesh health                     readiness of every service of a running stack, and why not
emomesh eval /data/fer2013 --split val   accuracy of a running stack on a labelled dataset
emomesh triton render --variant gpu --out deploy/triton/models

Benchmarks run from a checkout with `python -m bench` (bench/ measures the library and is not part of it).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from emomesh import analyze_cli
from emomesh.evaluation import cli as eval_cli
from emomesh.paths import MODEL_REPOSITORY
from emomesh.ports import local_address
from emomesh.stack import SERVICES, Stack, StackConfig
from emomesh.supervisor import GaveUp
from emomesh.triton_repo import RenderOptions, render_repository


def cmd_up(args: argparse.Namespace) -> int:
    config = StackConfig.ephemeral(args.state_dir) if args.ephemeral_ports else StackConfig(state_dir=args.state_dir)
    config.ort_threads = args.ort_threads
    stop = threading.Event()

    def request_stop(*_: object) -> None:
        stop.set()

    status = 0
    # Services given certificates (EMOMESH_TLS_CERT...) are health-checked over TLS (EMOMESH_CLIENT_TLS_*).
    config.client_tls = analyze_cli.client_security().tls
    with Stack(config) as stack:
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        print(stack.describe(), flush=True)
        print("Ctrl-C stops everything. Children that exit are restarted (see the log lines).", flush=True)
        try:
            stack.supervisor().run(stop)
        except GaveUp as exc:
            print(f"giving up: {exc}", file=sys.stderr, flush=True)
            status = 1
        print("stopping...", flush=True)
    print("stopped.")
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    from emomesh.demo import run_demo

    run_demo(args.state_dir)
    print("\nstack stopped.")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from emomesh.readiness import check_health

    try:
        tls = analyze_cli.client_security().tls
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    addresses = {spec.name: local_address(spec.name) for spec in SERVICES}
    for override in args.address:
        name, _, address = override.partition("=")
        if name not in addresses or not address:
            print(f"--address {override!r}: expected SERVICE=HOST:PORT, SERVICE one of {', '.join(addresses)}")
            return 2
        addresses[name] = address
    ok = True
    for name, address in addresses.items():
        report = check_health(address, timeout_s=args.timeout, tls=tls)
        ok &= report.serving
        print(f"{name:<8} {address:<18} {report.status:<12} {report.reason}".rstrip())
    return 0 if ok else 1


def cmd_triton_render(args: argparse.Namespace) -> int:
    names = render_repository(
        args.out,
        RenderOptions(
            args.variant, instances=args.instances, ort_threads=args.ort_threads, tensorrt=not args.no_tensorrt
        ),
    )
    print(f"rendered {args.variant} configs for {', '.join(names)} into {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emomesh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the embedded stack until Ctrl-C")
    up.add_argument("--state-dir", type=Path, default=Path(".stack"))
    up.add_argument("--ort-threads", type=int, default=1, help="onnxruntime threads per Triton model instance")
    up.add_argument("--ephemeral-ports", action="store_true", help="free ports instead of the documented ones")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="start the stack, analyse the bundled samples, stop")
    demo.add_argument("--state-dir", type=Path, default=Path(".stack/demo"))
    demo.set_defaults(func=cmd_demo)

    analyze = sub.add_parser("analyze", help="analyse image/video, audio and text through a running stack (Fusion)")
    analyze_cli.add_arguments(analyze)
    analyze.set_defaults(func=analyze_cli.cmd_analyze)

    health = sub.add_parser(
        "health", help="readiness of every service of a running stack; exits 1 unless all are SERVING"
    )
    health.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="SERVICE=HOST:PORT",
        help="where a service listens (default: the documented port on 127.0.0.1); repeatable",
    )
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each service")
    health.set_defaults(func=cmd_health)

    evaluate = sub.add_parser(
        "eval",
        help="evaluate a running stack on a labelled dataset",
        description=eval_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    eval_cli.add_arguments(evaluate)
    evaluate.set_defaults(func=eval_cli.cmd_eval)

    triton = sub.add_parser("triton", help="Triton model repository tools")
    triton_sub = triton.add_subparsers(dest="triton_command", required=True)
    render = triton_sub.add_parser("render", help="render config.pbtxt files from deploy/triton/models.yaml")
    render.add_argument("--variant", choices=["local", "gpu"], default="gpu")
    render.add_argument("--out", type=Path, default=MODEL_REPOSITORY)
    render.add_argument("--instances", type=int, default=1)
    render.add_argument("--ort-threads", type=int, default=1)
    render.add_argument("--no-tensorrt", action="store_true", help="gpu variant without the TensorRT accelerator")
    render.set_defaults(func=cmd_triton_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
