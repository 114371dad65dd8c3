//go:build cgo

package main

// With cgo on, the net package links libc; link it statically so that `go install
// ./cmd/pathtrace` gives one self-contained binary either way (without cgo Go links
// statically by itself). The linker's warning about getaddrinfo in static binaries is
// expected and harmless: pathtrace resolves no host names, so glibc's NSS is never
// loaded. `make build` sets CGO_ENABLED=0 and has no such warning.

// #cgo LDFLAGS: -static
import "C"
