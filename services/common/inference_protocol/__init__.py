"""The Open Inference Protocol (KServe V2 REST API), shared by the model services.

Services mount it with `install_inference_protocol(app, adapter)` and supply
an `InferenceAdapter` for their task.
"""
