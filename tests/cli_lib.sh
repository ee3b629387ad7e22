# Shared by the shell tests (sourced): a temporary folder, pass/fail counting
# and the two expectations. The sourcing script ends with cli_summary.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0

ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect_error NAME PATTERN CMD...: non-zero exit (not a signal), and stderr matches PATTERN.
expect_error() {
    local name=$1 pattern=$2; shift 2
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local rc=$?
    if [ $rc -eq 0 ]; then bad "$name: exit 0, expected failure"; return; fi
    if [ $rc -ge 128 ]; then bad "$name: killed by signal $((rc - 128))"; return; fi
    if ! grep -qE -- "$pattern" "$tmp/err"; then bad "$name: stderr lacks /$pattern/: $(head -c 300 "$tmp/err")"; return; fi
    ok
}

# expect_ok NAME CMD...: exit 0; stdout in $tmp/out, stderr in $tmp/err.
expect_ok() {
    local name=$1; shift
    if ! "$@" >"$tmp/out" 2>"$tmp/err" </dev/null; then bad "$name: failed: $(head -c 300 "$tmp/err")"; return; fi
    ok
}

cli_summary() {
    echo "$passes passed, $fails failed"
    [ $fails -eq 0 ]
}
