#!/bin/sh
# vm-suite.sh OUT REGEX: the kernel matrix's run on one kernel (inside a VM of
# scripts/vm.sh, or on the host): pathtrace doctor with every program loaded, then the
# privileged tests REGEX names, from binaries test-kernels.sh built in bin/vm. Leaves
# doctor.json, doctor.txt and tests.txt in OUT. POSIX sh: it runs before anything else
# in the VM.
out=$1 regex=$2
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
"$root/bin/vm/pathtrace" doctor --programs --json >"$out/doctor.json" 2>"$out/doctor.err"
"$root/bin/vm/pathtrace" doctor --programs >"$out/doctor.txt" 2>&1
cd "$root/cmd/pathtrace" || exit 1
PATHTRACE_TEST_BIN=$root/bin/vm PATHTRACE_REQUIRE_PRIVILEGED=1 \
	"$root/bin/vm/cmd.test" -test.run "$regex" -test.v -test.count 1 -test.timeout 60m >"$out/tests.txt" 2>&1
echo $? >"$out/tests.rc"
