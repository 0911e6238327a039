"""Where the video signature runs besides TensorFlow: `openvino` (issue 14). Imported lazily."""
