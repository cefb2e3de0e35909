"""Deployments: an app's wanted version in one region, and how its agent got it running."""
