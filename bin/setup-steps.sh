# Sourced by bin/setup and bin/test-lowest: set-up steps that print one line each and
# send pip's (and venv's, uv's) own output to a log file, named if a step fails.
# usage: setup_log=PATH; step "what it does" command args...

step() {
  local what=$1
  shift
  echo "fcnet: set-up: $what" >&2
  if ! "$@" >>"$setup_log" 2>&1; then
    echo "fcnet: error: set-up step failed: $what (its output: $setup_log)" >&2
    exit 1
  fi
}
