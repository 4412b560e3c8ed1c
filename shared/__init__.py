"""What every Rapport service agrees on: contracts, instruments, messaging, database plumbing,
settings and metrics. Nothing here imports a service."""
