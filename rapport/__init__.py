"""The operator's side of Rapport: the `rapport` command, the embedded stack, demo, bench, migrations."""
