"""App logs: short-lived requests for an app's output, answered by its regions' agents."""
