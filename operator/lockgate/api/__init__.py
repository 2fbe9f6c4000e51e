"""The lockgate API (lockgate.dev/v1alpha1): Application and Deployment models."""

from .application import ApplicationSpec, ApplicationStatus
from .deployment import DeploymentSpec, DeploymentStatus
from .resources import Application, Deployment, InvalidManifest, parse_resource

__all__ = [
    "Application",
    "ApplicationSpec",
    "ApplicationStatus",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStatus",
    "InvalidManifest",
    "parse_resource",
]
