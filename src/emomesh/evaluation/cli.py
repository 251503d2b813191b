"""`emomesh eval`: evaluate the running stack on a labelled dataset over gRPC.

    emomesh eval /data/fer2013 --split val --max-samples 1000            # vision at 127.0.0.1:50051
    emomesh eval /data/ravdess --speakers 17-20 --address 127.0.0.1:50952   # or --audio, --stack DIR
    emomesh eval /data/goemotions --split dev --start-stack               # own ephemeral stack, then stop
    emomesh eval /data/smp2020_ewect/labels.csv --split train --text 127.0.0.1:50053   # text,label CSV
    emomesh eval /data/ravdess --speakers 17-20 --mode speech-transcript --start-stack   # Analyze: voice + own words
    emomesh eval --summarize runs/eval --summary-out docs/table.md        # one table over many runs
    emomesh eval --list-adapters

Results go to --out (default runs/eval/<dataset>[-<split>]): results.jsonl (one line per sample,
appended as answers come in; a rerun resumes and retries only failed calls unless --fresh),
metrics.json, report.md and confusion.png; in --mode speech-transcript also pairs.jsonl, the real
speech + transcript prediction cache that services.fusion.weight_search reads."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from emomesh.addresses import Addresses, add_address_arguments
from emomesh.evaluation.adapters import ADAPTERS, AdapterOptions, detect_adapter, get_adapter
from emomesh.evaluation.metrics import ClassificationMetrics, RegressionMetrics
from emomesh.evaluation.pairs import MODALITY_MODE, MODES, SPEECH_TRANSCRIPT_MODE
from emomesh.evaluation.predictors import SERVICE_OF_MODALITY
from emomesh.evaluation.report import summarize
from emomesh.evaluation.runner import EvalResult, run_eval, service_for


class ProgressBar:
    """A dependency-free progress bar on stderr: redrawn in place on a terminal, a line every 10%
    otherwise (logs, CI)."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self.start = time.perf_counter()
        self.last_decile = -1
        self.interactive = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        filled = int(share * self.width)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {rate:.1f}/s eta {eta:.0f}s"
        if self.interactive:
            self.stream.write("\r" + line + ("\n" if done == total else ""))
            self.stream.flush()
        elif int(share * 10) > self.last_decile or done == total:
            self.last_decile = int(share * 10)
            self.stream.write(line + "\n")
            self.stream.flush()


def _value_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    return low, high


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, nargs="?", help="dataset folder or file")
    parser.add_argument("--adapter", choices=sorted(ADAPTERS), help="dataset reader (default: from the layout)")
    parser.add_argument("--split", help="split to evaluate (a CSV's split column; goemotions/meld: dev)")
    parser.add_argument("--speakers", help="speaker filter: ids, numbers or ranges, e.g. 17-20 or emodb_13,emodb_14")
    parser.add_argument("--value-range", type=_value_range, default=(-1.0, 1.0), help="regression targets' LOW,HIGH")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=MODALITY_MODE,
        help="modality: each sample to its modality's service; speech-transcript: each speech clip to the "
        "fusion service's Analyze with its own transcript as text, scoring audio, fused and text side by side",
    )
    parser.add_argument("--max-samples", type=int, help="evaluate a fixed-seed random subset of this size")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument(
        "--start-stack", action="store_true", help="start an ephemeral embedded stack with the needed service"
    )
    parser.add_argument(
        "--text-context",
        choices=["on", "off"],
        default="on",
        help="send conversation samples (MELD) with their earlier turns (default on)",
    )
    parser.add_argument("--face-crops", choices=["auto", "yes", "no"], default="auto", help="skip face detection")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="deadline of each call")
    parser.add_argument("--out", type=Path, help="results folder (default runs/eval/<dataset>[-<split>])")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--summarize", type=Path, nargs="+", metavar="DIR", help="summary table of finished runs")
    parser.add_argument("--summary-out", type=Path, help="write the --summarize table here too")
    parser.add_argument("--list-adapters", action="store_true", help="list the dataset adapters and exit")
    add_address_arguments(
        parser,
        (*SERVICE_OF_MODALITY.values(), "fusion"),
        one="the service of the dataset's modality (fusion in --mode speech-transcript)",
    )


def _default_out(args: argparse.Namespace) -> Path:
    name = args.dataset.stem if args.dataset.is_file() else args.dataset.name
    if args.dataset.name == "labels.csv":  # a dataset's labels.csv is named after its folder
        name = args.dataset.resolve().parent.name
    mode = args.mode if args.mode != MODALITY_MODE else None
    no_context = "no-context" if args.text_context == "off" else None
    suffix = "".join(f"-{part}" for part in (args.split, args.speakers, mode, no_context) if part)
    return Path("runs") / "eval" / (name + suffix.replace(",", "_"))


def _print_result(result: EvalResult) -> None:
    metrics = result.metrics
    head = f"{result.dataset}: model {result.model}, {metrics.total} scored, {result.failed} failed calls"
    if isinstance(metrics, ClassificationMetrics):
        print(
            f"{head}; accuracy {metrics.accuracy:.4f}, macro-F1 {metrics.macro_f1:.4f}, "
            f"weighted-F1 {metrics.weighted_f1:.4f}, no prediction {metrics.without_prediction}"
        )
    elif isinstance(metrics, RegressionMetrics):
        dims = ", ".join(f"{n} CCC {d['ccc']:.4f} MAE {d['mae']:.4f}" for n, d in metrics.dimensions.items())
        print(f"{head}; {dims}")
    else:
        print(f"{head}; MAE {metrics.mae:.4f}, Acc-2 {metrics.acc2:.4f}, Acc-7 {metrics.acc7:.4f}")
    if result.pairs is not None:
        pairs = result.pairs
        reliability = "-" if pairs.mean_text_reliability is None else f"{pairs.mean_text_reliability:.3f}"
        for name, m in (("audio", pairs.audio), ("fused", pairs.fused), ("text", pairs.text)):
            print(f"  {name:<5} accuracy {m.accuracy:.4f}, macro-F1 {m.macro_f1:.4f}")
        print(
            f"  fused - audio: accuracy {pairs.fused_minus_audio_accuracy:+.4f}, macro-F1 "
            f"{pairs.fused_minus_audio_macro_f1:+.4f}; text present in {pairs.text_present}/{pairs.clips} clips "
            f"(fused in {pairs.text_fused}), mean reliability {reliability}; transcript languages "
            + ", ".join(f"{lang} {n}" for lang, n in pairs.transcript_languages.items())
        )
    print(f"report: {result.report} ({result.seconds:.1f} s)")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.list_adapters:
        for name, registered in sorted(ADAPTERS.items()):
            print(f"{name:<16} {registered.task:<15} {registered.description}")
        return 0
    if args.summarize:
        table = summarize(args.summarize)
        print(table, end="")
        if args.summary_out:
            args.summary_out.parent.mkdir(parents=True, exist_ok=True)
            args.summary_out.write_text(table)
        return 0
    if args.dataset is None:
        print("emomesh eval: a dataset path is needed (or --summarize / --list-adapters)", file=sys.stderr)
        return 2
    try:
        adapter = args.adapter or detect_adapter(args.dataset)
        out = args.out or _default_out(args)
        progress = None if args.no_progress else ProgressBar(args.dataset.name)

        def evaluate(address: str | None) -> EvalResult:
            return run_eval(
                args.dataset,
                out,
                address=address,
                adapter=adapter,
                split=args.split,
                speakers=args.speakers,
                value_range=args.value_range,
                max_samples=args.max_samples,
                concurrency=args.concurrency,
                face_crops={"auto": None, "yes": True, "no": False}[args.face_crops],
                timeout_s=args.timeout_s,
                resume=not args.fresh,
                mode=args.mode,
                text_context=args.text_context == "on",
                progress=progress,
            )

        # Which service the dataset needs, from its first sample (loading the list is cheap).
        options = AdapterOptions(split=args.split, speakers=args.speakers, value_range=args.value_range)
        service = service_for(get_adapter(adapter).load(args.dataset, options)[0].modality, args.mode)
        if not args.start_stack:
            result = evaluate(Addresses.from_args(args, bare_address=True).address(service))
        else:
            from emomesh.stack import Stack, StackConfig

            # Analyze on speech needs the audio service (voice, transcript) and the text service.
            services = ("audio", "text", "fusion") if args.mode == SPEECH_TRANSCRIPT_MODE else (service,)
            with tempfile.TemporaryDirectory() as work, Stack(StackConfig.ephemeral(Path(work), services)) as stack:
                print(f"started the {service} service at {stack.config.address(service)}", file=sys.stderr)
                result = evaluate(stack.config.address(service))
    except (FileNotFoundError, ValueError) as exc:  # AddressError is a ValueError
        print(f"emomesh eval: {exc}", file=sys.stderr)
        return 2
    _print_result(result)
    return 0
