import os

# onnxruntime's Linux build (seen with 1.32.0) starts a telemetry uploader that
# contacts a Microsoft collector. It reads this variable once, when it is
# imported. The drift job loads no onnxruntime today, but it builds on
# services.common, whose model modules do, so the package sets the variable
# before any import, as services/__init__.py does. Set it to 0 to allow telemetry.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
