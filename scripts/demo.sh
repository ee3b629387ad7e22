#!/usr/bin/env bash
# The main job: answer a chat question with the default model and report speed.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== fasa generate --chat (SmolLM2-135M-Instruct, greedy) =="
build/fasa generate --chat --temp 0 -n 96 -p "Explain in three sentences why the sky is blue."
