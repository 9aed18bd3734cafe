"""Alerts on trends: rules per survey, evaluated by the worker after the rollups change."""
