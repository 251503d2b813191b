"""Renders Triton model repositories from deploy/triton/models.yaml and one template.

- `local`: Python backend running onnxruntime on CPU (the bundled tritonserver has no ONNX backend).
  Rendered into a scratch folder with a link to each model.onnx.
- `gpu`: Triton's onnxruntime backend on GPU instances, optionally with the TensorRT accelerator.
  Rendered in place into deploy/triton/models/ (committed; CI checks it is current). A model with a
  `gpu_file` (the int8 text models) is served there from the float graph the Triton image derives
  from its int8 file (services/text/float_model.py)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from emomesh.paths import MODEL_REPOSITORY, TRITON_DIR, model_file

VARIANTS = ("local", "gpu")


@dataclass(frozen=True)
class RenderOptions:
    variant: str = "local"
    instances: int = 1
    ort_threads: int = 1
    tensorrt: bool = True
    # Whether the dynamic batcher waits each model's max_queue_delay_microseconds for more requests. None:
    # the variant's own choice, on GPU yes, on CPU (local) no, since there a batch costs about the sum of its
    # items; requests that queue while the model runs are batched either way.
    batch_delay: bool | None = None

    def queue_delay_us(self, model: dict[str, Any]) -> int:
        wait = self.batch_delay if self.batch_delay is not None else self.variant != "local"
        return int(model["dynamic_batching"]["max_queue_delay_microseconds"]) if wait else 0


def load_specs(path: Path = TRITON_DIR / "models.yaml") -> dict[str, dict[str, Any]]:
    with path.open() as fh:
        return dict(yaml.safe_load(fh)["models"])


def tensorrt_profile(model: dict[str, Any]) -> dict[str, str] | None:
    """TensorRT's optimisation profile for a model with variable-length inputs (`tensorrt_sequence`):
    shapes `input:batch x length` from (1, 1) through (max_batch_size, max), tuned for the first preferred
    batch at `opt` tokens. None for a model without variable-length inputs."""
    sequence = model.get("tensorrt_sequence")
    if not sequence:
        return None
    variable = [tensor["name"] for tensor in model["inputs"] if list(tensor["dims"]) == [-1]]
    if not variable:
        raise ValueError("tensorrt_sequence needs inputs of dims [-1]")
    shapes = {
        "min": (1, 1),
        "opt": (model["dynamic_batching"]["preferred_batch_size"][0], sequence["opt"]),
        "max": (model["max_batch_size"], sequence["max"]),
    }
    return {key: ",".join(f"{name}:{batch}x{length}" for name in variable) for key, (batch, length) in shapes.items()}


def render_config(name: str, model: dict[str, Any], options: RenderOptions) -> str:
    if options.variant not in VARIANTS:
        raise ValueError(f"unknown variant {options.variant!r}; expected one of {VARIANTS}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TRITON_DIR), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return env.get_template("config.pbtxt.j2").render(
        name=name,
        model=model,
        variant=options.variant,
        instances=options.instances,
        ort_threads=options.ort_threads,
        tensorrt=options.tensorrt,
        tensorrt_profile=tensorrt_profile(model),
        queue_delay_us=options.queue_delay_us(model),
    )


def render_repository(
    out: Path,
    options: RenderOptions,
    source: Path = MODEL_REPOSITORY,
    only: list[str] | None = None,
) -> list[str]:
    """Writes config.pbtxt (and, for `local`, model.py plus a link to model.onnx) for every model
    whose ONNX file exists. Returns the names rendered."""
    rendered = []
    for name, model in load_specs().items():
        if only is not None and name not in only:
            continue
        onnx_path = model_file(name, source)
        if not onnx_path.exists():
            continue
        model_dir = out / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        (model_dir / "config.pbtxt").write_text(render_config(name, model, options))
        if options.variant == "local":
            shutil.copyfile(TRITON_DIR / "python_backend_model.py", model_dir / "1" / "model.py")
            link = model_file(name, out)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(onnx_path.resolve())
        rendered.append(name)
    return rendered
