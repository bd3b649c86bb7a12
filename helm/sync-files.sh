#!/usr/bin/env bash
# Copies the repository's alert rules and Grafana dashboards into the chart, which can only read
# files inside its own directory (.Files.Get):
#   alerts/*.yml, alerts/*.yaml  ->  helm/pacs-health-agent/files/alerts/
#   dashboards/*.json            ->  helm/pacs-health-agent/files/dashboards/
# Files removed at the source are removed from the chart too. Run it after changing alerts/ or
# dashboards/ and commit the result; tests/test_helm.py fails while the copies differ.
#
#   helm/sync-files.sh          sync
#   helm/sync-files.sh --check  change nothing; exit 1 and list the differences if out of sync
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
chart="$here/pacs-health-agent"
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

shopt -s nullglob
drift=0

# sync_dir SRC_DIR DEST_DIR PATTERN...
sync_dir() {
  local src="$1" dest="$2"
  shift 2
  local f name pat
  mkdir -p "$dest"
  for pat in "$@"; do
    for f in "$src"/$pat; do
      [ -f "$f" ] || continue
      name="$(basename "$f")"
      if ! cmp -s "$f" "$dest/$name"; then
        drift=1
        if [ "$check" -eq 1 ]; then
          echo "out of sync: ${dest#"$repo"/}/$name (source ${f#"$repo"/})"
        else
          cp -p "$f" "$dest/$name"
          echo "copied ${f#"$repo"/} -> ${dest#"$repo"/}/$name"
        fi
      fi
    done
    for f in "$dest"/$pat; do
      name="$(basename "$f")"
      if [ ! -f "$src/$name" ]; then
        drift=1
        if [ "$check" -eq 1 ]; then
          echo "stale: ${f#"$repo"/} (no ${src#"$repo"/}/$name)"
        else
          rm -f "$f"
          echo "removed ${f#"$repo"/}"
        fi
      fi
    done
  done
}

sync_dir "$repo/alerts" "$chart/files/alerts" '*.yml' '*.yaml'
sync_dir "$repo/dashboards" "$chart/files/dashboards" '*.json'

if [ "$check" -eq 1 ] && [ "$drift" -eq 1 ]; then
  echo "run helm/sync-files.sh to update the chart's copies" >&2
  exit 1
fi
exit 0
