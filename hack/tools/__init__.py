"""Programs that hack/ scripts run (`python -m hack.tools.<name>` from the repository root):
the process kubelet and the demo watcher."""
