"""The objects one classifier process shares between its routes, built once per app."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.classifier.model import Classifier
from services.classifier.settings import ClassifierSettings
from services.common.metrics import ServiceMetrics
from services.common.readiness import Readiness
from services.common.repository import ModelRepository


@dataclass
class ClassifierService:
    """Settings, metrics, model repository and the classifier once models are loaded."""

    settings: ClassifierSettings
    metrics: ServiceMetrics
    repository: ModelRepository
    readiness: Readiness = field(default_factory=Readiness)
    classifier: Classifier | None = None

    @classmethod
    def from_settings(cls, settings: ClassifierSettings) -> ClassifierService:
        repository = ModelRepository(
            settings.model_repository,
            task="classification",
            pinned_versions=settings.pinned_versions,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        )
        return cls(settings=settings, metrics=ServiceMetrics("classifier"), repository=repository)

    def load_models(self) -> None:
        """Load and warm up every model, then build the classifier.

        It blocks for as long as loading takes, so run it in a worker thread.
        """
        self.repository.load()
        self.classifier = Classifier(self.repository, self.settings, self.metrics)

    def ready_classifier(self) -> Classifier:
        """Return the classifier, or raise ServiceUnavailable (503) while it is not ready."""
        self.readiness.check()
        if self.classifier is None:  # READY is set only after load_models succeeded
            raise RuntimeError("readiness is READY but no classifier was built")
        return self.classifier
