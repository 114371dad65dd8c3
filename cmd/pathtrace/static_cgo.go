//go:build cgo

//go:debug netdns=go

package main

// With cgo on, the net package links libc; link it statically so that `go install
// ./cmd/pathtrace` gives one self-contained binary either way (without cgo Go links
// statically by itself). The linker's warnings about getaddrinfo and getpwuid_r (klog's
// os/user) in static binaries are expected and harmless: host names (a kubeconfig's
// API server) are resolved by Go's own resolver (netdns=go above), and os/user is not
// called, so glibc's NSS is never loaded. `make build` sets CGO_ENABLED=0 and has no
// such warnings.

// #cgo LDFLAGS: -static
import "C"
