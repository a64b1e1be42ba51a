"""Sensors (source watch, lake watch, alerts), schedules and the jobs they target. Imports: resources."""
