"""ServedModel: chunking by max_batch_size, spec checks at load, ModelInfo (with a fake Triton client)."""

from __future__ import annotations

import numpy as np
import pytest

from emomesh.triton import ModelSpec, ServedModel, TensorSpec

SPEC = ModelSpec(
    name="m",
    version="1",
    inputs=(TensorSpec("x", "FP32", (3,)),),
    outputs=(TensorSpec("probabilities", "FP32", (7,)),),
    max_batch_size=4,
    parameters={"emomesh_model_version": "m-2026"},
)


class FakeTriton:
    def __init__(self) -> None:
        self.batches: list[int] = []

    async def model_spec(self, model: str) -> ModelSpec:
        return SPEC

    async def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str], timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append(len(x))
        # Row i of the output carries the input's first value, so order can be checked.
        return {outputs[0]: np.repeat(x[:, :1], 7, axis=1)}


async def test_infer_in_chunks_respects_max_batch_size_and_keeps_order() -> None:
    triton = FakeTriton()
    model = ServedModel(triton, "m")
    await model.load()
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    out = await model.infer_in_chunks(len(x), lambda rows: {"x": x[rows]})
    assert triton.batches == [4, 4, 2]
    assert out.shape == (10, 7) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], x[:, 0])
    empty = await model.infer_in_chunks(0, lambda rows: {"x": x[rows]})
    assert empty.shape == (0, 7) and triton.batches == [4, 4, 2]


async def test_load_runs_the_check_and_info_reports_the_artifact_version() -> None:
    class Picky(ServedModel):
        def check(self, spec: ModelSpec) -> None:
            raise RuntimeError("wrong inputs")

    with pytest.raises(RuntimeError, match="wrong inputs"):
        await Picky(FakeTriton(), "m").load()
    model = ServedModel(FakeTriton(), "m")
    with pytest.raises(RuntimeError, match=r"load\(\) was not awaited"):
        _ = model.spec
    await model.load()
    assert (model.info.name, model.info.version) == ("m", "m-2026")
