"""Monitors, plots and reports."""

from .monitor import FiringRateMonitor

__all__ = ["FiringRateMonitor"]
