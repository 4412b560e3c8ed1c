"""Rapport services: each talks to the others only through events."""
