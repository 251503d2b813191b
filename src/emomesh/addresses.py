"""Where a client command finds the stack: one resolution for `emomesh analyze`, `health`, `eval` and
`models` (and any later client command), so that each accepts the same flags and variables.

The address of a service (or of Triton) is the first of:

1. the command line: `--<service> HOST:PORT` (`--fusion`, `--vision`, ..., `--triton`) or
   `--address SERVICE=HOST:PORT` (repeatable); `--address HOST:PORT` alone for a command that talks
   to one service (analyze: fusion; eval: the service of the dataset's modality);
2. `--stack STATE_DIR`: the `endpoints.json` that `emomesh up --state-dir STATE_DIR` wrote once its
   stack was up (how to reach a stack started with `--ephemeral-ports`);
3. the environment: `EMOMESH_CLIENT_<SERVICE>_ADDR` (`EMOMESH_CLIENT_FUSION_ADDR`...), for Triton
   `EMOMESH_TRITON_URL` (the variable the services read);
4. the documented port on 127.0.0.1 (`emomesh up` without `--ephemeral-ports`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emomesh.config import Env
from emomesh.ports import LOOPBACK, TRITON_GRPC_PORT, local_address
from emomesh.procs import process_alive
from emomesh.stack import SERVICES, StackEndpoints

TRITON = "triton"
CLIENT_ENV_PREFIX = "EMOMESH_CLIENT_"
SERVICE_NAMES: tuple[str, ...] = tuple(spec.name for spec in SERVICES)


class AddressError(ValueError):
    """An address option, variable or stack directory that cannot be used (the CLI exits with 2)."""


def env_variable(target: str) -> str:
    """The variable that holds a target's address: EMOMESH_CLIENT_<SERVICE>_ADDR, or EMOMESH_TRITON_URL."""
    return "EMOMESH_TRITON_URL" if target == TRITON else f"{CLIENT_ENV_PREFIX}{target.upper()}_ADDR"


def documented_address(target: str) -> str:
    """Where `emomesh up` (documented ports) has a service's gRPC port, or Triton's."""
    if target == TRITON:
        return f"{LOOPBACK}:{TRITON_GRPC_PORT}"
    if target not in SERVICE_NAMES:
        raise AddressError(f"unknown service {target!r}: one of {', '.join((*SERVICE_NAMES, TRITON))}")
    return local_address(target)


def add_address_arguments(
    parser: argparse.ArgumentParser, services: Sequence[str], *, triton: bool = False, one: str = ""
) -> None:
    """--stack, --address and one --<service> flag per service the command talks to (--triton too).
    `one` describes the one service a bare `--address HOST:PORT` means, for commands that have one."""
    group = parser.add_argument_group(
        "where the stack is",
        "first of: these flags; --stack; EMOMESH_CLIENT_<SERVICE>_ADDR"
        + (" (Triton: EMOMESH_TRITON_URL)" if triton else "")
        + "; the documented port on 127.0.0.1",
    )
    group.add_argument(
        "--stack",
        type=Path,
        metavar="STATE_DIR",
        help="the stack that `emomesh up --state-dir STATE_DIR` runs (its STATE_DIR/endpoints.json)",
    )
    bare = f"; HOST:PORT alone is {one}" if one else ""
    group.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="SERVICE=HOST:PORT",
        help=f"where a service listens (repeatable){bare}",
    )
    for name in services:
        group.add_argument(
            f"--{name}", dest=f"{name}_address", metavar="HOST:PORT", help=f"{name} service ({env_variable(name)})"
        )
    if triton:
        group.add_argument(
            "--triton", dest="triton_address", metavar="HOST:PORT", help=f"Triton's gRPC port ({env_variable(TRITON)})"
        )


def read_stack(state_dir: Path) -> StackEndpoints:
    """The endpoints of the stack that runs with state_dir; AddressError when there is none."""
    try:
        endpoints = StackEndpoints.read(state_dir)
    except FileNotFoundError:
        raise AddressError(
            f"no stack is running with the state directory {state_dir}: it has no endpoints.json "
            f"(`emomesh up --state-dir {state_dir}` writes it once the stack is up)"
        ) from None
    except (OSError, ValueError) as exc:
        raise AddressError(str(exc)) from exc
    if not process_alive(endpoints.pid):
        raise AddressError(
            f"the stack of {state_dir} is not running: its endpoints.json was written by pid {endpoints.pid}, "
            f"which has ended without removing it (killed?); start it again with `emomesh up --state-dir {state_dir}`"
        )
    return endpoints


@dataclass(frozen=True)
class Addresses:
    """The addresses a client command uses, resolved in the order of the module docstring."""

    # Target (service name or "triton") -> address given on the command line; "" for a bare --address.
    flags: Mapping[str, str] = field(default_factory=dict)
    stack: StackEndpoints | None = None
    stack_dir: Path | None = None
    environ: Mapping[str, str] | None = None

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        *,
        bare_address: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Addresses:
        """From the flags add_address_arguments added. bare_address: `--address HOST:PORT` is allowed
        (the command talks to one service)."""
        targets = (*SERVICE_NAMES, TRITON)
        flags: dict[str, str] = {}
        for given in getattr(args, "address", None) or []:
            name, sep, address = given.partition("=")
            if not sep:
                if not bare_address:
                    raise AddressError(f"--address {given!r}: expected SERVICE=HOST:PORT")
                name, address = "", given
            if name and name not in targets:
                raise AddressError(f"--address {given!r}: SERVICE is one of {', '.join(targets)}")
            if not address:
                raise AddressError(f"--address {given!r}: no HOST:PORT after the '='")
            flags[name] = address
        for name in targets:
            value = getattr(args, f"{name}_address", None)
            if value:
                flags[name] = value
        stack_dir: Path | None = getattr(args, "stack", None)
        stack = read_stack(stack_dir) if stack_dir is not None else None
        return cls(flags, stack, stack_dir, environ)

    def address(self, target: str) -> str:
        """Where target (a service name, or "triton" for Triton's gRPC port) listens."""
        given = self.flags.get(target) or self.flags.get("")
        if given:
            return given
        if self.stack is not None:
            if target == TRITON:
                return self.stack.triton["grpc"]
            if target not in self.stack.services:
                raise AddressError(
                    f"the stack of {self.stack_dir} does not run the {target} service "
                    f"(it runs {', '.join(self.stack.services) or 'none'})"
                )
            return self.stack.services[target]["grpc"]
        from_env = Env(environ=self.environ).get_optional_str(env_variable(target))
        return from_env or documented_address(target)

    def services(self) -> tuple[str, ...]:
        """The services to look at when a command looks at all of them (emomesh health): with
        --stack those the stack runs and those given on the command line, otherwise every service."""
        if self.stack is None:
            return SERVICE_NAMES
        return tuple(name for name in SERVICE_NAMES if name in self.stack.services or name in self.flags)
