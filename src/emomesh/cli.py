"""`emomesh` command line: run the embedded stack, analyse media through it, render model configs.

emomesh up                         start tritonserver, redis-server and all services, restart any that
                                   exits; Ctrl-C stops
emomesh demo                       start the stack, analyse the bundled samples, stop
emomesh analyze --image face.jpg   analyse a file through a running stack (--json for scripts)
emomesh health                     readiness of every service of a running stack, and why not
emomesh models                     the models Triton serves: version, tensors, readiness
emomesh eval /data/fer2013 --split val   accuracy of a running stack on a labelled dataset
emomesh triton render --variant gpu --out deploy/triton/models

Client commands (analyze, health, models, eval) reach the documented ports on 127.0.0.1 unless told
otherwise: --stack STATE_DIR (the endpoints.json of `emomesh up --state-dir STATE_DIR`),
--address SERVICE=HOST:PORT or --fusion/--vision/... HOST:PORT, or EMOMESH_CLIENT_<SERVICE>_ADDR
(Triton: EMOMESH_TRITON_URL).
Benchmarks run from a checkout with `python -m bench` (bench/ measures the library and is not part of it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
from importlib import metadata
from pathlib import Path

from emomesh import analyze_cli, live_cli, models_cli
from emomesh.addresses import AddressError, Addresses, add_address_arguments
from emomesh.evaluation import cli as eval_cli
from emomesh.paths import MODEL_REPOSITORY
from emomesh.stack import SERVICES, Stack, StackConfig
from emomesh.startup import STARTUP_ERRORS, StartupError
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
    from emomesh.readiness import check_gateway, check_health

    try:
        tls = analyze_cli.client_security().tls
        book = Addresses.from_args(args)
        addresses = {name: book.address(name) for name in book.services()}
    except ValueError as exc:  # AddressError and ConfigError are ValueErrors
        print(f"emomesh health: {exc}", file=sys.stderr)
        return 2
    # The console gateway speaks HTTP: checked (GET /readyz) when the stack of --stack runs it.
    gateway = book.stack.services.get("gateway", {}).get("http") if book.stack is not None else None
    if gateway is not None:
        addresses["gateway"] = gateway.removeprefix("http://")
    ok = True
    reports = []
    for name, address in addresses.items():
        if name == "gateway" and gateway is not None:
            report = check_gateway(gateway, timeout_s=args.timeout)
        else:
            report = check_health(address, timeout_s=args.timeout, tls=tls)
        ok &= report.serving
        if args.json:
            reason = report.reason.removeprefix("(").removesuffix(")")
            reports.append({"service": name, "address": address, "status": report.status, "reason": reason})
        else:
            print(f"{name:<8} {address:<18} {report.status:<12} {report.reason}".rstrip(), flush=True)
    if args.json:
        print(json.dumps({"serving": ok, "services": reports}, indent=2))
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


def version() -> str:
    try:
        return metadata.version("emomesh")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def exit_codes_text() -> str:
    lines = [
        "exit status:",
        "  0    done (health: every service SERVING; models: every model ready)",
        "  1    the command failed (a call failed, a service or model is not ready; the reason is on stderr)",
        "  2    bad arguments, or no stack where --stack or an address points",
    ]
    lines.extend(f"  {error.exit_code:<4} up: {error.summary}" for error in STARTUP_ERRORS)
    lines.append("  130  interrupted (Ctrl-C) while starting")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emomesh",
        description=__doc__,
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"emomesh {version()}")
    parser.add_argument("--debug", action="store_true", help="debug logging, and the traceback of an error")
    # --debug after the command too (`emomesh up --debug`); SUPPRESS keeps the global value when absent.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common], help="run the embedded stack until Ctrl-C")
    up.add_argument("--state-dir", type=Path, default=Path(".stack"))
    up.add_argument("--ort-threads", type=int, default=1, help="onnxruntime threads per Triton model instance")
    up.add_argument("--ephemeral-ports", action="store_true", help="free ports instead of the documented ones")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", parents=[common], help="start the stack, analyse the bundled samples, stop")
    demo.add_argument("--state-dir", type=Path, default=Path(".stack/demo"))
    demo.set_defaults(func=cmd_demo)

    analyze = sub.add_parser(
        "analyze", parents=[common], help="analyse image/video, audio and text through a running stack (Fusion)"
    )
    analyze_cli.add_arguments(analyze)
    analyze.set_defaults(func=analyze_cli.cmd_analyze)

    live = sub.add_parser(
        "live", parents=[common], help="a live session: replay a video/audio file at real time, or the camera"
    )
    live_cli.add_arguments(live)
    live.set_defaults(func=live_cli.cmd_live)

    health = sub.add_parser(
        "health",
        parents=[common],
        help="readiness of every service of a running stack; exits 1 unless all are SERVING",
    )
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each service")
    health.add_argument("--json", action="store_true", help="print the reports as JSON, only")
    add_address_arguments(health, [spec.name for spec in SERVICES])
    health.set_defaults(func=cmd_health)

    models = sub.add_parser(
        "models",
        parents=[common],
        help="the models Triton serves (version, tensors, readiness); exits 1 unless all are ready",
        description=models_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models_cli.add_arguments(models)
    models.set_defaults(func=models_cli.cmd_models)

    evaluate = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate a running stack on a labelled dataset",
        description=eval_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    eval_cli.add_arguments(evaluate)
    evaluate.set_defaults(func=eval_cli.cmd_eval)

    triton = sub.add_parser("triton", parents=[common], help="Triton model repository tools")
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
    """Runs one command. A StartupError is one line on stderr (cause and fix) and its exit status;
    any other error is one line too, unless --debug asks for the traceback."""
    args = build_parser().parse_args(argv)
    debug = bool(args.debug)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except StartupError as exc:
        if debug:
            traceback.print_exc()
        print(f"emomesh {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except AddressError as exc:
        print(f"emomesh {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emomesh {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`emomesh analyze --json | head`): not an error of ours.
        # Point stdout at /dev/null so that the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if debug:
            raise
        print(f"emomesh {args.command}: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
