"""Where instances run: Kubernetes workload slots, Docker hosts."""
