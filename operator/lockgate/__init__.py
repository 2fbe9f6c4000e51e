"""lockgate: progressive delivery for Kubernetes workloads and Docker hosts, routed by Traefik."""

__version__ = "0.1.0"
