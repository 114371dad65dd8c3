package bpf

// The clang is pinned: the committed objects are what clang-14 makes from these sources,
// and `make check-generate` fails when a regeneration differs. One object per
// architecture the binary is built for (pathtrace_x86_bpfel.o, pathtrace_arm64_bpfel.o):
// they differ only in how a kprobe reads its arguments (arch.h).
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type event -type filter -type ct_tuple PathTrace pathtrace.c -- -I.
