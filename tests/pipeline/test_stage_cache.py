"""The stage cache shares finished stages by hard link, except ONNX external data, which onnx refuses to read
through a file with several links (its hard-link-attack check): a restored stage's model must load."""

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgelm.core.records import StageMetrics
from edgelm.pipeline.stage_cache import restore, store


def external_data_stage(folder, step_hash: str):
    folder.mkdir(parents=True)
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [weight])
    onnx.save(helper.make_model(graph), folder / "model.onnx", save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    StageMetrics(kind="export", hash=step_hash).save(folder)


def test_restored_external_data_loads_and_other_files_are_linked(tmp_path):
    stages = [("01-export", "h1")]
    external_data_stage(tmp_path / "a" / "01-export", "h1")
    assert store(tmp_path / "cache", tmp_path / "a", stages) == 1
    assert restore(tmp_path / "cache", tmp_path / "b", stages) == 1
    restored = tmp_path / "b" / "01-export"
    model = onnx.load(str(restored / "model.onnx"))  # raises on a hard-linked external-data file
    assert numpy_helper.to_array(model.graph.initializer[0]).sum() == 64 * 64
    assert os.stat(restored / "model.onnx.data").st_nlink == 1 and os.stat(restored / "model.onnx").st_nlink > 1
