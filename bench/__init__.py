"""Benchmarks of the VisionServe services. Each module's docstring gives its command."""

import os

# onnxruntime 1.32 on Linux starts a telemetry uploader that resolves
# and contacts a Microsoft collector. The variable is read when onnxruntime is
# imported, so it is set here, before any bench module imports it, and child
# processes inherit it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
