#!/usr/bin/env bash
# test-kernels.sh: boots each Debian kernel of the matrix under qemu (scripts/vm.sh) and runs
# `pathtrace doctor --json` there, then prints one line per kernel: what it offers and the
# mode pathtrace picks. SUITES overrides the list (default: bullseye bookworm
# bookworm-backports, i.e. 5.10, 6.1, 6.12). First step of issue 12: the privileged suite
# does not run in the VMs yet.
set -euo pipefail
cd "$(dirname "$0")/.."
suites=${SUITES:-bullseye bookworm bookworm-backports}
[[ -x bin/pathtrace ]] || { echo "test-kernels.sh: bin/pathtrace missing: make build" >&2; exit 1; }
out=$PWD/bin/test-kernels # not /tmp: the VM has a /tmp of its own
rm -rf "$out"; mkdir -p "$out"
fail=0
for s in $suites; do
	start=$(date +%s)
	if VM_SHARE=$out scripts/vm.sh run "$s" -- sh -c "bin/pathtrace doctor --json >$out/$s.json 2>$out/$s.err; echo \$? >$out/$s.rc" >"$out/$s.console" 2>&1 && [[ -f $out/$s.rc ]]; then :; fi
	rc=$(cat "$out/$s.rc" 2>/dev/null || echo boot-failed)
	echo "== $s: doctor exit $rc in $(($(date +%s) - start)) s"
	if [[ -s $out/$s.json ]]; then jq -c . "$out/$s.json" | cut -c1-2000; else tr -d "\r" <"$out/$s.console" | grep -v "^\[" | tail -8 || true; fi
	[[ $rc == 0 ]] || fail=1
done

exit $fail
