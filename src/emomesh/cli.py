"""`emomesh` command line: run the embedded stack, analyse media through it, render model configs.

emomesh up                         start tritonserver, redis-server and all services; Ctrl-C stops
emomesh demo                       start the stack, analyse the bundled samples, stop
emomesh analyze --image face.jpg   analyse a file through a running stack
emomesh health                     health of every service of a running stack
emomesh eval /data/fer2013 --split val   accuracy of a running stack on a labelled dataset
emomesh bench --out runs/bench/all.json  latency/throughput of an embedded stack vs in-process models
emomesh triton render --variant gpu --out deploy/triton/models
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from emomesh import analyze_cli
from emomesh.evaluation import cli as eval_cli
from emomesh.paths import MODEL_REPOSITORY
from emomesh.stack import SERVICES, Stack, StackConfig
from emomesh.triton_repo import RenderOptions, render_repository


def cmd_up(args: argparse.Namespace) -> int:
    config = StackConfig.ephemeral(args.state_dir) if args.ephemeral_ports else StackConfig(state_dir=args.state_dir)
    config.ort_threads = args.ort_threads
    # Services given certificates (EMOMESH_TLS_CERT...) are health-checked over TLS (EMOMESH_CLIENT_TLS_*).
    config.client_tls = analyze_cli.client_security().tls
    with Stack(config) as stack:
        print(stack.describe(), flush=True)
        print("Ctrl-C stops everything.", flush=True)
        stop = {"now": False}

        def request_stop(*_: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stop["now"]:
            time.sleep(0.2)
        print("stopping...", flush=True)
    print("stopped.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from emomesh.demo import run_demo

    run_demo(args.state_dir)
    print("\nstack stopped.")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from emomesh.procs import grpc_healthy

    try:
        tls = analyze_cli.client_security().tls
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = True
    for spec in SERVICES:
        address = f"127.0.0.1:{spec.default_port}"
        healthy = grpc_healthy(address, tls=tls)
        ok &= healthy
        print(f"{spec.name:<8} {address:<18} {'SERVING' if healthy else 'DOWN'}")
    return 0 if ok else 1


def _bench_importable() -> bool:
    # bench/ lives at the repository root, next to src/: importable when running from a checkout.
    from emomesh.paths import PROJECT_ROOT

    if (PROJECT_ROOT / "bench" / "run_all.py").is_file() and str(PROJECT_ROOT) not in sys.path:
        sys.path.append(str(PROJECT_ROOT))
    return (PROJECT_ROOT / "bench" / "run_all.py").is_file()


def cmd_bench(args: argparse.Namespace) -> int:
    if not _bench_importable():
        print("emomesh bench runs from a source checkout (bench/ is not installed)", file=sys.stderr)
        return 2
    from bench import run_all

    return run_all.run(args)


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

    health = sub.add_parser("health", help="health of every service of a running stack")
    health.set_defaults(func=cmd_health)

    evaluate = sub.add_parser(
        "eval",
        help="evaluate a running stack on a labelled dataset",
        description=eval_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    eval_cli.add_arguments(evaluate)
    evaluate.set_defaults(func=eval_cli.cmd_eval)

    bench = sub.add_parser("bench", help="latency/throughput of an embedded stack against in-process models")
    if _bench_importable():
        from bench.options import add_arguments as add_bench_arguments

        add_bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)

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
