"""The scoring service: exact scores from the instrument registry, the longitudinal record."""
