"""Command-line tools over the lip_agnostic core (``lip-onnx``)."""
