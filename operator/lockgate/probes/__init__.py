"""Health checks and metrics for analysis."""
