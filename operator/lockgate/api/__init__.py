"""The lockgate API (lockgate.dev/v1alpha1): Application and Deployment models."""

from .application import ApplicationSpec, ApplicationStatus
from .common import API_VERSION, GROUP, VERSION
from .deployment import ACTION_ANNOTATION, DeploymentSpec, DeploymentStatus
from .resources import Application, Deployment, InvalidManifest, parse_resource

__all__ = [
    "ACTION_ANNOTATION",
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Application",
    "ApplicationSpec",
    "ApplicationStatus",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStatus",
    "InvalidManifest",
    "parse_resource",
]
