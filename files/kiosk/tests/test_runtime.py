"""How every ONNX Runtime session is configured."""
from __future__ import annotations

import onnxruntime as ort

from pi_kiosk.runtime import available_cores, session_options


def test_threads_default_to_the_usable_cores_and_spin_only_between_operators() -> None:
    opts = session_options(0)
    assert opts.intra_op_num_threads == available_cores()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert opts.get_session_config_entry("session.intra_op.spin_duration_us") == "200"
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session_options(3).intra_op_num_threads == 3


def test_memory_pattern_only_for_fixed_shapes() -> None:
    assert session_options(1).enable_mem_pattern
    assert not session_options(1, dynamic_shapes=True).enable_mem_pattern
