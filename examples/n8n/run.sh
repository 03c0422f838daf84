#!/usr/bin/env bash
# Import credentials + workflows into a throwaway n8n home and execute them headless.
# Usage: ./run.sh [N8N_BIN]   (expects an OpenAI-compatible server at the URL in the JSON files)
set -euo pipefail
cd "$(dirname "$0")"
N8N=${1:-/tmp/n8n/node_modules/.bin/n8n}
export N8N_USER_FOLDER=${N8N_USER_FOLDER:-$PWD/home}
export N8N_ENCRYPTION_KEY=${N8N_ENCRYPTION_KEY:-repolm-local-test-key}
export N8N_DIAGNOSTICS_ENABLED=false
export N8N_VERSION_NOTIFICATIONS_ENABLED=false
export N8N_RUNNERS_BROKER_PORT=${N8N_RUNNERS_BROKER_PORT:-5679}
"$N8N" import:credentials --input=credentials.json >/dev/null
rc=0
for wf in http-chat llm-chain llm-chain-chat-completions; do
  [ -f "$wf.json" ] || continue
  id=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['id'])" "$wf.json")
  "$N8N" import:workflow --input="$wf.json" >/dev/null
  # stdout = a few log lines, then the execution JSON (the JSON goes through the info logger,
  # so N8N_LOG_LEVEL must stay at info or the output is empty)
  if out=$("$N8N" execute --id="$id" --rawOutput 2>&1) && grep -q '"status": "success"' <<<"$out"; then
    echo "$wf: OK: $(python3 -c 'import json,sys;s=sys.stdin.read();d=json.loads(s[s.index("\n{")+1:]);r=d["data"]["resultData"];print(json.dumps(r["runData"][r["lastNodeExecuted"]][0]["data"]["main"][0][0]["json"]))' <<<"$out")"
  else
    echo "$wf: FAILED"; echo "$out" | tail -20; rc=1
  fi
done
exit $rc
