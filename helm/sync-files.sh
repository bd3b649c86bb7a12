#!/usr/bin/env bash
# Brings the chart's copies of the alert rules and Grafana dashboards up to date; the chart can
# only read files inside its own directory (.Files.Get):
#   alerts/*.yml, alerts/*.yaml  ->  helm/pacs-health-agent/files/alerts/
#   dashboards/*.json            ->  helm/pacs-health-agent/files/dashboards/
# Files removed at the source are removed from the chart too. The copies are generated files, so
# this is `make generate` (python -m scripts.generate, which holds the copy rule and regenerates
# dashboards/*.json first); tests/test_generated_up_to_date.py and tests/test_helm.py fail while
# a committed copy differs.
#
#   helm/sync-files.sh          regenerate and copy
#   helm/sync-files.sh --check  change nothing; exit 1 and list the differences if out of sync
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
  --check | "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
cd "$repo"
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3
fi
exec "$py" -m scripts.generate ${1:+"$1"}
