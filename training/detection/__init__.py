"""YOLO detector training: the digits-scenes data set, ultralytics training, evaluation, export."""
