"""Delivered flexibility per award and ISP: direction sign × (baseline − actual), traceable to its inputs."""
