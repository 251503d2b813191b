"""Recovery from a killed tritonserver, measured: how long until the model services say NOT_SERVING and
calls fail with UNAVAILABLE, until the supervisor has restarted Triton, and until the services are
SERVING and answer again; and how much memory a killed server's Python-backend stubs keep when
nobody reaps the server (what `emomesh up` did before it was supervised) against after the
supervisor's clean-up.

    OMP_NUM_THREADS=1 python -m bench.bench_recovery --repeats 3 --out runs/bench/recovery.json

Part 1 (orphans): a tritonserver alone, killed with SIGKILL and left unreaped for --settle seconds:
its stubs (which ignore SIGTERM, and see the zombie server as alive) keep running; their RSS and PSS
are summed. Then one Supervisor step reaps the server and kills its process group; what is left is
measured again.

Part 2 (recovery): an ephemeral stack (tritonserver, vision, audio, text, fusion) with its Supervisor
in a thread, default readiness interval (1 s) and the default first restart delay (1 s); the policy
counts a server that ran 10 s as stable (default 60 s), so that every kill here is a first restart
rather than a crash loop with a growing backoff. For each repeat tritonserver is killed with SIGKILL
while a probe loop (every 50 ms) asks each service's health and sends one AnalyzeText; every first
transition is timed from the kill."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import write_results
from emomesh.procs import free_port, process_group_members
from emomesh.stack import Stack, StackConfig
from emomesh.supervisor import RestartPolicy, Supervisor
from emomesh.triton_repo import RenderOptions, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer
from emotion.text.v1 import text_pb2, text_pb2_grpc

MODALITIES = ("vision", "audio", "text")


def memory_mb(pids: list[int]) -> dict[str, float]:
    """Summed resident (RSS) and proportional (PSS: shared pages split between sharers) memory."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"processes": len(pids), "rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1)}


def orphans(work: Path, settle_s: float) -> dict[str, object]:
    render_repository(work / "repo", RenderOptions("local"))
    server = TritonServer(work / "repo", work, TritonPorts(free_port(), free_port(), free_port()), work / "triton.log")
    server.start()
    try:
        server.wait_ready(300)
        assert server.process is not None
        group = server.process.pid
        running = memory_mb([pid for pid in process_group_members(group) if pid != group])
        os.kill(group, signal.SIGKILL)
        time.sleep(settle_s)  # not reaped: the old `emomesh up` never polled its children
        unreaped = memory_mb(process_group_members(group))
        begin = time.monotonic()
        Supervisor([server]).step()  # reaps, kills the group, frees shared memory
        cleanup_s = time.monotonic() - begin
        supervised = memory_mb(process_group_members(group))
    finally:
        server.stop()
    return {
        "stubs_while_running": running,
        f"left_{settle_s:.0f}s_after_kill_unreaped": unreaped,
        "left_after_supervisor_step": supervised,
        "supervisor_cleanup_s": round(cleanup_s, 2),
    }


def status(stub: health_pb2_grpc.HealthStub) -> str:
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
    except grpc.RpcError as exc:
        return exc.code().name if isinstance(exc, grpc.Call) else "ERROR"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def text_call(stub: text_pb2_grpc.TextServiceStub) -> str:
    try:
        stub.AnalyzeText(text_pb2.AnalyzeTextRequest(text="What a lovely day."), timeout=2)
    except grpc.RpcError as exc:
        return exc.code().name if isinstance(exc, grpc.Call) else "ERROR"
    return "OK"


def one_kill(stack: Stack, supervisor: Supervisor, limit_s: float) -> dict[str, float]:
    names = (*MODALITIES, "fusion")
    channels = {name: grpc.insecure_channel(stack.config.address(name)) for name in names}
    health = {name: health_pb2_grpc.HealthStub(channel) for name, channel in channels.items()}
    text = text_pb2_grpc.TextServiceStub(channels["text"])
    assert stack.triton.process is not None
    old = stack.triton.process.pid
    marks: dict[str, float] = {}

    def mark(what: str, when: float) -> None:
        marks.setdefault(what, round(when, 2))

    try:
        assert all(status(h) == "SERVING" for h in health.values()) and text_call(text) == "OK"
        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while time.monotonic() - killed < limit_s:
            now = time.monotonic() - killed
            for name, stub in health.items():
                state = status(stub)
                if state != "SERVING":
                    mark(f"{name}_not_serving", now)
                elif f"{name}_not_serving" in marks:
                    mark(f"{name}_serving_again", now)
            outcome = text_call(text)
            if outcome == "UNAVAILABLE":
                mark("text_call_unavailable", now)
            elif outcome == "OK" and "text_call_unavailable" in marks:
                mark("text_call_ok_again", now)
            if len(marks) == 2 * len(names) + 2:
                break
            time.sleep(0.05)
        restart = supervisor.restarts[-1]
        assert restart.name == "tritonserver" and restart.restarted_at is not None
        marks["triton_restarted"] = round(restart.restarted_at - killed, 2)
        if restart.ready_at is not None:
            marks["triton_ready"] = round(restart.ready_at - killed, 2)
    finally:
        for channel in channels.values():
            channel.close()
    return marks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="tritonserver kills in part 2")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds the killed server stays unreaped")
    parser.add_argument("--limit", type=float, default=300.0, help="longest wait for recovery, per kill")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as work:
        results["orphans"] = orphans(Path(work) / "orphans", args.settle)
        print(json.dumps(results["orphans"], indent=2), flush=True)
        config = StackConfig.ephemeral(Path(work) / "stack", services=(*MODALITIES, "fusion"))
        config.restart_policy = RestartPolicy(stable_after_s=10)
        runs = []
        with Stack(config) as stack:
            supervisor = stack.supervisor()
            supervisor.start()
            for repeat in range(args.repeats):
                time.sleep(3)  # calm between kills
                runs.append(one_kill(stack, supervisor, args.limit))
                print(f"kill {repeat + 1}: {runs[-1]}", flush=True)
    results["kills"] = runs
    results["median_s"] = {
        key: statistics.median(run[key] for run in runs if key in run) for key in sorted({k for r in runs for k in r})
    }
    print("median seconds after the kill:", json.dumps(results["median_s"], indent=2), flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
