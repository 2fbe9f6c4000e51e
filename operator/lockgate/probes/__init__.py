"""Health checks, and the metric providers analysis reads through (`metrics.MetricsProvider`)."""
