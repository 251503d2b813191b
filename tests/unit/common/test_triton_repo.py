from pathlib import Path

from emomesh.triton_repo import RenderOptions, load_specs, render_config, render_repository


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
