// Command labpod is a tiny traffic helper for the pathtrace lab built by
// scripts/lab.sh. It is not part of pathtrace proper: it only plays the
// part of the "pods" (servers that answer TCP and UDP) and of the clients
// that send traffic between them, so that the lab needs nothing beyond
// this binary, iproute2 and iptables.
//
// Usage:
//
//	labpod serve --name NAME [--tcp PORT[,PORT...]] [--udp PORT[,PORT...]]
//	labpod tcp ADDR:PORT [--timeout 2s] [--sport N] [--msg hello]
//	labpod udp ADDR:PORT [--count 1] [--size 64] [--interval 0] [--sport N] [--wait 0]
//
// ADDR is IPv4 or IPv6 ([fd00:244:2::57]:8080): serve's sockets take both families.
//
// serve listens on every given TCP and UDP port (all addresses). A TCP
// connection is read until a newline, 4 KiB or one second of silence, then
// answered with "ok NAME\n" and closed. Every UDP datagram is answered with
// "ok NAME\n" to its sender. serve runs until SIGINT or SIGTERM.
//
// tcp connects, sends the message and a newline, prints the reply and exits
// 0; any failure is printed to stderr and the exit status is 1.
//
// udp sends COUNT datagrams of SIZE bytes (each payload starts with its
// sequence number), INTERVAL apart. With --wait > 0 it then waits that long
// for replies and prints "replies=N". It exits 0 when every send succeeded.
//
// Flags may come before or after the address. Usage errors exit 2.
package main
