"""Docker hosts: containers of an Application on plain Docker Engines, found again by label.

`containers`: what runs where, created, started, stopped and listed by label; `capacity`:
whether a host has room for the instances a rollout adds; `resources`: container limits.
Connections to the hosts live in `lockgate.hosts` (the file provider's route file uses them
too), health checks in `lockgate.probes.health`.
"""
