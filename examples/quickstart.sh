#!/usr/bin/env bash
# The whole story, against the embedded server (or TILEBOX_REDIS_URL when set): scaffold a workflow
# project, build and publish a release, deploy it to the default cluster, start a release runner,
# submit a job with subtasks, wait for it, and print the result, the deployments and the history.
set -euo pipefail

work=$(mktemp -d)
runner_pid=""
cleanup() {
  if [ -n "$runner_pid" ]; then kill -TERM "$runner_pid" 2>/dev/null || true; wait "$runner_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# A fresh team per run, so the quickstart can run again on the same server.
export TILEBOX_TEAM="${TILEBOX_TEAM:-quickstart-$(date +%s)}"
cd "$work"

# Show each command as one would type it: words with spaces or quotes in double quotes.
shown() {
  local out="" word
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:@=,+-]+$ ]]; then out+=" $word"; else out+=" \"${word//\"/\\\"}\""; fi
  done
  printf '%s' "${out# }"
}
step() { printf '\n\033[1m$ tilebox %s\033[0m\n' "$(shown "$@")"; tilebox "$@"; }

step workflow init --name "Hello Scenes"
step workflow create "Hello Scenes"
step workflow build-release
step workflow publish-release
step workflow publish-release          # identical content: the same release, nothing uploaded
step workflow deploy-release --latest  # to the team's default cluster

printf '\n\033[1m$ tilebox runner start &\033[0m\n'
tilebox runner start &
runner_pid=$!

printf '\n\033[1m$ tilebox job submit --name hello --task hello-scenes.Greet --input ...\033[0m\n'
job=$(tilebox job submit --name hello --task hello-scenes.Greet --input '{"name": "World"}' --json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "submitted job $job"
step job wait "$job" --timeout 60
step job get "$job"
step cluster get default
step deployments
step events list

printf '\n\033[1mstopping the release runner (SIGTERM drains)\033[0m\n'
kill -TERM "$runner_pid"
wait "$runner_pid"
runner_pid=""
echo "done: team $TILEBOX_TEAM, data in ${TILEBOX_HOME:-~/.local/share/tilebox}"
