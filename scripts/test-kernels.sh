#!/usr/bin/env bash
# test-kernels.sh: the kernel matrix. Boots each Debian kernel under qemu (scripts/vm.sh)
# and runs there, with this machine's root filesystem, pathtrace doctor --programs (the
# modes and every program's verifier count) and the privileged tests that prove each
# capability (scripts/kmatrix/matrix: Columns), in the VM's own root namespace, where
# the conntrack-full test may lower nf_conntrack_max. Then the same on this host (unless
# TEST_KERNELS_HOST=0), and prints one matrix. Exit 1 when any test of any kernel failed.
#
# SUITES overrides the kernels (default: bullseye bookworm bookworm-backports, i.e.
# 5.10, 6.1, 6.12). Results stay in bin/test-kernels/SUITE/.
set -euo pipefail
cd "$(dirname "$0")/.."
suites=${SUITES:-bullseye bookworm bookworm-backports}
out=$PWD/bin/test-kernels # not /tmp: the VM has a /tmp of its own
rm -rf "$out"; mkdir -p "$out" bin/vm

echo "test-kernels: building the binaries the VMs run"
CGO_ENABLED=0 go build -o bin/vm/pathtrace ./cmd/pathtrace
CGO_ENABLED=0 go build -o bin/vm/labpod ./cmd/labpod
CGO_ENABLED=0 go build -o bin/vm/labredirect ./cmd/labredirect
go test -c -o bin/vm/cmd.test ./cmd/pathtrace 2>&1 | grep -v "statically linked\|in function\|^#" || true
[[ -x bin/vm/cmd.test ]] || { echo "test-kernels.sh: building the test binary failed" >&2; exit 1; }
regex=$(go run ./scripts/kmatrix -list)

dirs=()
for s in $suites; do
	scripts/vm.sh fetch "$s" >/dev/null
	mkdir -p "$out/$s"; touch "$out/$s/vm"
	start=$(date +%s)
	echo "test-kernels: $s ($(cat /var/cache/pathtrace-vm/kernels/"$s"/release 2>/dev/null || echo ?))"
	# A VM that ended before the suite wrote its results (a kernel panic while booting
	# under TCG has been seen, once, on 6.12) is booted once more; its console is kept.
	for try in 1 2; do
		VM_SHARE=$out/$s VM_TIMEOUT=${VM_TIMEOUT:-3000} PATHTRACE_VM=1 scripts/vm.sh run "$s" -- \
			env PATHTRACE_VM=1 sh scripts/vm-suite.sh "$out/$s" "$regex" >"$out/$s/console.txt" 2>&1 || true
		[[ -s $out/$s/tests.rc || $try == 2 ]] && break
		mv "$out/$s/console.txt" "$out/$s/console-boot$try.txt"
		echo "test-kernels: $s: the VM ended before the tests ran (see console-boot$try.txt); booting it again"
	done
	echo $(($(date +%s) - start)) >"$out/$s/secs"
	grep -E '^--- (PASS|FAIL|SKIP)' "$out/$s/tests.txt" 2>/dev/null | sed 's/^/  /' || echo "  no test ran: see $out/$s/console.txt"
	dirs+=("$out/$s")
done
if [[ ${TEST_KERNELS_HOST:-1} == 1 ]]; then
	start=$(date +%s)
	echo "test-kernels: this host ($(uname -r))"
	sh scripts/vm-suite.sh "$out/host" "$regex" || true
	echo $(($(date +%s) - start)) >"$out/host/secs"
	dirs+=("$out/host")
fi
echo
go run ./scripts/kmatrix "${dirs[@]}"
