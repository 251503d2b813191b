from pathlib import Path

import pytest

from emomesh.triton_repo import RenderOptions, load_specs, render_config, render_repository, tensorrt_profile


def test_local_variant_uses_the_python_backend_and_links_the_onnx(tmp_path: Path) -> None:
    names = render_repository(tmp_path, RenderOptions("local", ort_threads=2))
    assert "fer_mini_xception" in names
    config = (tmp_path / "fer_mini_xception" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config
    assert 'string_value: "2"' in config
    assert "dynamic_batching" in config and "max_batch_size: 64" in config
    assert (tmp_path / "fer_mini_xception" / "1" / "model.py").exists()
    assert (tmp_path / "fer_mini_xception" / "1" / "model.onnx").resolve().is_file()


def test_gpu_variant_uses_onnxruntime_on_gpu_with_optional_tensorrt() -> None:
    spec = load_specs()["fer_mini_xception"]
    with_trt = render_config("fer_mini_xception", spec, RenderOptions("gpu", tensorrt=True))
    assert 'backend: "onnxruntime"' in with_trt and "KIND_GPU" in with_trt and '"tensorrt"' in with_trt
    without = render_config("fer_mini_xception", spec, RenderOptions("gpu", tensorrt=False))
    assert "tensorrt" not in without


def test_a_model_can_opt_out_of_tensorrt() -> None:
    spec = {**load_specs()["fer_mini_xception"], "tensorrt": False}
    assert "tensorrt" not in render_config("fer_mini_xception", spec, RenderOptions("gpu", tensorrt=True))


def test_only_the_gpu_variant_waits_to_fill_a_batch() -> None:
    spec = load_specs()["audio_acrnn"]
    configured = spec["dynamic_batching"]["max_queue_delay_microseconds"]
    assert configured > 0
    gpu = render_config("audio_acrnn", spec, RenderOptions("gpu"))
    assert f"max_queue_delay_microseconds: {configured}\n" in gpu
    # On the CPU a lone request runs at once; queued ones are still batched by the dynamic batcher.
    local = render_config("audio_acrnn", spec, RenderOptions("local"))
    assert "max_queue_delay_microseconds: 0\n" in local and "dynamic_batching {" in local
    # Either can be asked for (bench.bench_batch_delay compares the two on the CPU).
    waiting = render_config("audio_acrnn", spec, RenderOptions("local", batch_delay=True))
    assert f"max_queue_delay_microseconds: {configured}\n" in waiting
    not_waiting = render_config("audio_acrnn", spec, RenderOptions("gpu", batch_delay=False))
    assert "max_queue_delay_microseconds: 0\n" in not_waiting


def test_variable_length_models_get_one_tensorrt_profile_for_every_batch_and_length() -> None:
    spec = load_specs()["text_minilm_emotion"]
    assert tensorrt_profile(spec) == {
        "min": "input_ids:1x1,attention_mask:1x1",
        "opt": "input_ids:8x48,attention_mask:8x48",
        "max": "input_ids:32x512,attention_mask:32x512",
    }
    config = render_config("text_minilm_emotion", spec, RenderOptions("gpu"))
    assert 'parameters { key: "trt_profile_max_shapes" value: "input_ids:32x512,attention_mask:32x512" }' in config
    assert "trt_profile" not in render_config("text_minilm_emotion", spec, RenderOptions("local"))
    assert tensorrt_profile(load_specs()["fer_mini_xception"]) is None
    with pytest.raises(ValueError, match="needs inputs of dims"):
        tensorrt_profile({**load_specs()["fer_mini_xception"], "tensorrt_sequence": {"opt": 8, "max": 16}})


def test_every_variable_length_model_under_tensorrt_has_a_profile() -> None:
    """Without one, onnxruntime's TensorRT provider rebuilds the engine (seconds) whenever a request is
    longer than any before it."""
    for name, spec in load_specs().items():
        variable = any(list(tensor["dims"]) == [-1] for tensor in spec["inputs"])
        if variable and spec.get("tensorrt", True):
            assert tensorrt_profile(spec) is not None, name
            assert spec["tensorrt_sequence"]["max"] >= spec["tensorrt_sequence"]["opt"] >= 1, name
