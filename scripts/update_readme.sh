#!/usr/bin/env bash
# Regenerates README.md's configuration table from the schema (`medseg train --list-config`).
set -euo pipefail
cd "$(dirname "$0")/.."
table="$(mktemp)"
build/medseg train --list-config > "$table"
awk -v table="$table" '
  /<!-- BEGIN CONFIG TABLE -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
  /<!-- END CONFIG TABLE -->/ { skip = 0 }
  !skip { print }
' README.md > README.md.new
mv README.md.new README.md
rm -f "$table"
