"""Triton Python-backend model that runs an ONNX file with onnxruntime on the CPU.

Used only by the local variant of the model repository: the tritonserver binary bundled in
nvidia-pytriton has no ONNX Runtime backend. Production serves the same model.onnx with Triton's
onnxruntime backend, so the tensor names and shapes are identical in both variants."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        threads = int(params.get("ORT_INTRA_OP_THREADS", {}).get("string_value", "1"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        # The dynamic batcher hands over several requests at once: run them as one batch when their
        # shapes agree (Triton only groups same-shaped requests), then split the outputs back.
        arrays = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            for request in requests
        ]
        groups = [arrays]
        first = self.input_names[0]
        if len({a[first].shape[1:] for a in arrays}) > 1:
            groups = [[a] for a in arrays]
        responses = []
        for group in groups:
            feeds = {name: np.concatenate([a[name] for a in group]) for name in self.input_names}
            outputs = self.session.run(self.output_names, feeds)
            offset = 0
            for a in group:
                size = a[first].shape[0]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(out[offset : offset + size]))
                    for name, out in zip(self.output_names, outputs)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
                offset += size
        return responses
