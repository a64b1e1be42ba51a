"""Automation: the jobs, their schedules and (later) the sensors that watch the platform."""
