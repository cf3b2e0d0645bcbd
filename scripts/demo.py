"""Classify real photos and held-out digits through the gateway, as a user would.

Starts the classifier and the gateway as local uvicorn processes on free
ports, sends each image over HTTP to the gateway, prints the predictions and
stops both services. Exits with status 1 when a prediction is not the expected
one, so the demo doubles as a smoke test. Before the services stop, it saves
what each service's /metrics shows. Then it runs the drift job once on the
prediction log that the model services wrote to the local Redis, prints where
the drift report is and deletes the run's Redis keys.

    python -m scripts.demo --repository models
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from scripts.demo_detection import DETECTOR_MODEL, show_detection
from scripts.demo_monitoring import (
    delete_demo_keys,
    prediction_log_env,
    save_metrics,
    write_drift_report,
)
from scripts.digit_samples import DigitSample, load_digit_samples
from scripts.local_stack import GATEWAY_OPEN_ACCESS_ENV, Server, running_server
from scripts.sample_images import SamplePhoto, imagenet_samples

IMAGENET_MODEL = "imagenet-efficientnet-lite0"
DIGITS_MODEL = "digits-cnn"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path("models"),
        help="model repository folder containing <name>/<version>/ (default: models)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs/demo"),
        help="where the rendered detection images and the drift report are written "
        "(default: runs/demo)",
    )
    parser.add_argument(
        "--no-detector",
        dest="detector",
        action="store_false",
        help="classification only; skips the detector service",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where the services write their logs (default: a temporary folder)",
    )
    return parser  # fmt: skip


@contextmanager
def local_stack(
    repository: Path,
    log_dir: Path,
    *,
    with_detector: bool = False,
    prediction_log: bool = False,
) -> Iterator[dict[str, Server]]:
    """Run the classifier, optionally the detector, and an open-access gateway pointed at them.

    With `prediction_log`, the model services write it to the demo's Redis key prefix.
    """
    models = str(repository.resolve())

    def model_service_env(service: str) -> dict[str, str]:
        env = {f"VS_{service.upper()}_MODEL_REPOSITORY": models}
        return {**env, **prediction_log_env(service)} if prediction_log else env

    with ExitStack() as stack:
        servers = {
            "classifier": stack.enter_context(
                running_server(
                    "services.classifier.app:create_app", model_service_env("classifier"), log_dir
                )
            )
        }
        # An empty detector URL turns the gateway's detection routes off.
        detector_url = ""
        if with_detector:
            servers["detector"] = stack.enter_context(
                running_server(
                    "services.detector.app:create_app", model_service_env("detector"), log_dir
                )
            )
            detector_url = servers["detector"].url
        gateway_env = {
            "VS_GATEWAY_CLASSIFIER_URL": servers["classifier"].url,
            "VS_GATEWAY_DETECTOR_URL": detector_url,
            **GATEWAY_OPEN_ACCESS_ENV,
            # Nothing balances load onto this gateway, so there is nothing to drain at the end.
            "VS_GATEWAY_SHUTDOWN_DRAIN_SECONDS": "0",
        }
        servers["gateway"] = stack.enter_context(
            running_server("services.gateway.app:create_app", gateway_env, log_dir)
        )
        yield servers


def classify(client: httpx.Client, image: bytes, model: str, top_k: int) -> dict[str, object]:
    response = client.post(
        "/v1/classify",
        params={"model": model, "top_k": top_k},
        content=image,
        headers={"Content-Type": "image/jpeg"},
    )
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


def show_photos(client: httpx.Client, photos: list[SamplePhoto]) -> bool:
    print(f"\nReal photos through the gateway, model {IMAGENET_MODEL}:")
    all_ok = True
    for photo in photos:
        result = classify(client, photo.jpeg, IMAGENET_MODEL, top_k=3)
        predictions = result["predictions"]
        assert isinstance(predictions, list)  # narrows the JSON type for mypy
        labels = [prediction["label"] for prediction in predictions]
        ok = photo.check(labels)
        all_ok = all_ok and ok
        ranked = ", ".join(f"{p['label']} {p['probability']:.2f}" for p in predictions)
        expected = " / ".join(sorted(photo.expected_labels))
        verdict = "ok" if ok else f"UNEXPECTED (wanted {expected} in top {photo.within_top})"
        print(f"  {photo.name:<24} {ranked:<60} {verdict}")
    return all_ok


def show_digits(client: httpx.Client, digits: list[DigitSample], reported_accuracy: float) -> bool:
    print(f"\nHeld-out handwritten digits through the gateway, model {DIGITS_MODEL}:")
    correct = 0
    agree = 0
    for sample in digits:
        result = classify(client, sample.png, DIGITS_MODEL, top_k=1)
        predictions = result["predictions"]
        assert isinstance(predictions, list)
        label = predictions[0]["label"]
        correct += label == sample.label
        agree += label == sample.training_prediction
    accuracy = correct / len(digits)
    print(f"  {correct}/{len(digits)} correct: accuracy {accuracy:.2%} through the service")
    print(f"  test accuracy reported by training: {reported_accuracy:.2%} (target >= 97%)")
    print(f"  top-1 equal to the training-time evaluation on {agree}/{len(digits)} images")
    return accuracy >= 0.97 and agree == len(digits)


def main(args: argparse.Namespace) -> int:
    photos = imagenet_samples()
    digits, reported_accuracy = load_digit_samples(args.repository, DIGITS_MODEL)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="visionserve-demo-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    with_detector = args.detector and (args.repository / DETECTOR_MODEL).is_dir()
    if args.detector and not with_detector:
        print(
            f"No {DETECTOR_MODEL} in {args.repository}, so the detection part is skipped; "
            f"build it with `python -m training.detection.build_default --repository "
            f"{args.repository}`."
        )

    print(f"Starting the services (logs in {log_dir}) ...")
    with local_stack(
        args.repository, log_dir, with_detector=with_detector, prediction_log=True
    ) as servers:
        for name, server in servers.items():
            print(f"  {name:<10} {server.url}")
        gateway_url = servers["gateway"].url
        print(f"  API docs   {gateway_url}/docs")
        with httpx.Client(base_url=gateway_url, timeout=60.0) as client:
            results = [show_photos(client, photos)]
            results.append(show_digits(client, digits, reported_accuracy))
            if with_detector:
                results.append(
                    show_detection(client, args.repository, args.output_dir, DIGITS_MODEL)
                )
        save_metrics(servers, args.output_dir / "metrics")
    print("\nAll services stopped.")
    try:
        write_drift_report(args.repository, args.output_dir / "drift")
    finally:
        delete_demo_keys()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
