"""`emomesh models`: the models Triton serves, with their version, tensors and readiness, read from
Triton itself (its repository index, then each ready model's metadata and configuration).

    emomesh models                       # Triton at --triton / --stack / EMOMESH_TRITON_URL / 127.0.0.1:8001
    emomesh models --stack .stack --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from tritonclient.grpc import InferenceServerClient
from tritonclient.utils import InferenceServerException

from emomesh.addresses import TRITON, Addresses, add_address_arguments

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    # As Triton reports it: with the batch dimension (-1) first for a model that batches.
    shape: list[int]

    def text(self) -> str:
        return f"{self.name} {self.datatype} [{','.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    state: str
    ready: bool
    # Why the model is not ready, as Triton says it.
    reason: str = ""
    # The artifact's own version (models.yaml `version`, the config's emomesh_model_version parameter).
    artifact_version: str = ""
    max_batch_size: int = 0
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()


def _tensors(items: list[dict[str, Any]]) -> tuple[Tensor, ...]:
    return tuple(Tensor(str(t["name"]), str(t["datatype"]), [int(d) for d in t.get("shape", [])]) for t in items)


def list_models(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[ServedModel]:
    """Every model of Triton's repository index; tensors and batch size for those that are ready.
    InferenceServerException when Triton cannot be reached."""
    client = InferenceServerClient(url)
    try:
        index = client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
        models = []
        for entry in index.get("models", []):
            name, version = str(entry["name"]), str(entry.get("version", ""))
            state = str(entry.get("state", "UNKNOWN"))
            if state != "READY":
                models.append(ServedModel(name, version, state, False, str(entry.get("reason", ""))))
                continue
            meta = client.get_model_metadata(name, version, as_json=True, client_timeout=timeout_s)
            config = client.get_model_config(name, version, as_json=True, client_timeout=timeout_s).get("config", {})
            parameters = config.get("parameters", {})
            models.append(
                ServedModel(
                    name,
                    version,
                    state,
                    True,
                    artifact_version=str(parameters.get("emomesh_model_version", {}).get("string_value", "")),
                    max_batch_size=int(config.get("max_batch_size", 0)),
                    inputs=_tensors(meta.get("inputs", [])),
                    outputs=_tensors(meta.get("outputs", [])),
                )
            )
        return models
    finally:
        client.close()


def format_models(url: str, models: list[ServedModel]) -> str:
    lines = [f"Triton at {url}: {len(models)} model{'' if len(models) == 1 else 's'}"]
    for model in models:
        head = f"  {model.name:<22} v{model.version:<3} {model.state:<11}"
        if not model.ready:
            lines.append(f"{head} {model.reason}".rstrip())
            continue
        artifact = f" ({model.artifact_version})" if model.artifact_version else ""
        lines.append(f"{head} max batch {model.max_batch_size}{artifact}")
        lines.extend(f"      in  {tensor.text()}" for tensor in model.inputs)
        lines.extend(f"      out {tensor.text()}" for tensor in model.outputs)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON, only")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline of each call to Triton (s)")
    add_address_arguments(parser, (), triton=True)


def cmd_models(args: argparse.Namespace) -> int:
    """Exit status 0 when every model is ready, 1 when one is not or Triton cannot be reached."""
    try:
        url = Addresses.from_args(args).address(TRITON)
    except ValueError as exc:
        print(f"emomesh models: {exc}", file=sys.stderr)
        return 2
    try:
        models = list_models(url, args.timeout)
    except InferenceServerException as exc:
        print(
            f"emomesh models: Triton at {url} cannot be reached ({exc.message() or exc}); is the stack up? "
            "(--stack, --triton or EMOMESH_TRITON_URL reach another one)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps({"triton": url, "models": [asdict(m) for m in models]}, indent=2))
    else:
        print(format_models(url, models))
    return 0 if models and all(m.ready for m in models) else 1
