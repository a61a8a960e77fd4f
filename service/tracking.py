"""MLflow as every part of tipml uses it: a client on the settings' tracking URI, and tipml's
MLflow experiments by name, created on first use with tipml's artifact location.

It sits below the flows and the benchmark so that both reach MLflow the same way. MLflow is
imported when a client is made: the CLI reads the names here without paying for it.
"""

from typing import TYPE_CHECKING

from service.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

SCORER_EXPERIMENT = "tip-scorer"  # training runs of the scorer
REPORT_EXPERIMENT = "tip-experiments"  # prompt-experiment reports
BENCHMARK_EXPERIMENT = "tip-benchmark"  # the tip benchmark's default name, one run per cell


def registry_client(settings: Settings) -> "MlflowClient":
    """A client on the settings' tracking and registry URI, also made MLflow's current one.

    mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI to this process's environment, so a
    subprocess started afterwards inherits it: name the registry explicitly when that matters.
    """
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow.MlflowClient(
        tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
    )


def experiment_id(client: "MlflowClient", settings: Settings, name: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=settings.artifact_location)
