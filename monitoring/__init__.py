import os

# The drift job imports onnxruntime indirectly through services.common, and
# onnxruntime's Linux build (seen with 1.32.0) starts a telemetry uploader
# that contacts a Microsoft collector. It reads this variable once, when it is
# imported, so the package sets it before any of its modules imports
# onnxruntime. Set it to 0 to allow telemetry.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
