"""Command-line tools: `lockgate` and the kubectl plugin `kubectl-lockgate`."""
