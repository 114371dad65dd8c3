package main

// Generated as bpf/gen.go does it, with the same pinned clang: one little-endian object
// (the program reads no architecture-specific state), committed so that go build needs
// no clang.
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -type counter Redirect redirect.c -- -I../../bpf
