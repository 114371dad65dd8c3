// Package bpf holds pathtrace's kernel side: the CO-RE C programs (pathtrace.c), the
// headers they share (pathtrace.h for the structs that Go also reads, parse.h for header
// parsing, arch.h for what the x86 vmlinux.h lacks on arm64), the vmlinux.h they compile
// against, and the Go loaders that bpf2go generates from them for amd64 and arm64.
//
// The tc programs (tc_ingress, tc_egress and their _l3 twins for devices without a
// link-layer header) run on ingress and egress of each traced interface; they parse the
// packet just far enough to apply the user's selectors (the inner packet of one tunnel
// included: VXLAN, Geneve, IP in IP), copy the first bytes of matching packets into the events ring buffer and
// always hand the packet on unchanged. The kfree_skb programs (tp_btf, or raw tracepoint
// with and without the drop reason argument) report the death of matching packets in the
// network namespaces listed in netns_allow.
//
// This package must not attach anything or interpret events: loading and attaching is
// the tracer package's job, decoding the decode package's. Regenerate with `make
// generate`; the generated .go and .o files are committed so that `go build` needs no
// clang.
package bpf
