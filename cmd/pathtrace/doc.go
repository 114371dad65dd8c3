// Command pathtrace follows packets hop by hop through a Linux or Kubernetes node and
// names the hop where they died or stalled.
//
//	pathtrace follow [flags] SELECTOR...      follow packets (--pcap FILE: and keep them; --html FILE: draw them)
//	pathtrace agent [flags]                   always on: metrics, follow clients, --pcap-dir
//
// This package wires the tracer, decode and exporter packages together from flags. It
// must not hold tracing or decoding logic of its own.
package main
