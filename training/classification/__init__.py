"""Image classification: training, evaluation report and ONNX export into the model repository.

Command-line tools (each has --help):

- `python -m training.classification.train`: train on digits, faces, mnist, cifar10 or
  an image folder; writes a run folder with checkpoints, log.csv and a test report.
- `python -m training.classification.report`: evaluate a checkpoint on its
  val or test split.
- `python -m training.classification.export`: export a checkpoint to
  `<repository>/<name>/<version>/` after an ONNX Runtime vs PyTorch parity check.
- `python -m training.classification.pretrained`: export EfficientNet-Lite0
  with its ImageNet weights as `imagenet-efficientnet-lite0`.
- `python -m training.classification.build_defaults`: build both demo models.

Every model input goes through `services.common.preprocess.preprocess`, the
function the classifier service uses.
"""
