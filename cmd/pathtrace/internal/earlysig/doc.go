// Package earlysig catches SIGINT and SIGTERM as early in the process's life as Go
// allows, before the heavy package initialisers (client-go, protobuf, Prometheus) run.
//
// A signal that arrives before any handler is installed kills the process with the
// default action; with this package the signal is instead queued and seen by the
// command once it starts, so that it still exits cleanly and with status 0. It only
// registers the handler: it must not act on a signal itself.
//
// Go initialises packages in import-path order as their imports become ready, so this
// package, whose only imports are os, os/signal and syscall, runs before the
// k8s.io, google.golang.org and Prometheus packages whose paths sort after it.
package earlysig
