"""The public event contracts: what clinic IT and the services code against. Change only with a new version."""
