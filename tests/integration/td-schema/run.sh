#!/bin/sh
# run.sh DUMP_TDS WORKDIR - the td-schema integration test: installs ajv and
# the W3C TD schema package from npm (package-lock.json) when missing, makes
# the directory produce TDs with dump_tds, and checks them with check.js.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dump=$1
work=$2
mkdir -p "$work"
if [ ! -f "$here/node_modules/wot-thing-description-types/schema/td-json-schema-validation.json" ] ||
   [ ! -d "$here/node_modules/ajv-formats" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
rm -rf "$work/data"
"$dump" "$work/data" > "$work/tds.jsonl"
node "$here/check.js" "$work/tds.jsonl"
