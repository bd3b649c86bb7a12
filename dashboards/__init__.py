"""The Grafana dashboards this project ships: the committed JSON in this directory and the
generator that writes it (`python -m dashboards.generate`, or `make generate` for every generated
file)."""
