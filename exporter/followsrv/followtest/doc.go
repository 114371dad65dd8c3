// Package followtest is a fake event source for the follow server, for tests without a
// kernel: it holds the selectors the server sets as the kernel would, and emits the
// hops of made-up packets with the slot the kernel would name. Tests only.
package followtest
