package bpf

// The clang is pinned: the committed objects are what clang-14 makes from these sources,
// and `make check-generate` fails when a regeneration differs.
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -target amd64 -type event -type filter -type ct_tuple PathTrace pathtrace.c -- -I.
