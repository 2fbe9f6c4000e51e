"""Connections to Docker hosts, shared by the Docker target (containers) and the Traefik
file provider (a route file written over SSH): host specifications, SSH with pinned host
keys, docker-py clients over unix, tcp + mutual TLS or ssh, and errors that name the host.

It knows nothing of containers or routes, so neither of its users imports the other.
"""
