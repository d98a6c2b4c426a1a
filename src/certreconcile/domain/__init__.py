"""Shared vocabulary, pure: names, key specs, statuses, durations, certificate facts."""
