"""The alerts service: rules over each episode, the alert lifecycle, notifications."""
