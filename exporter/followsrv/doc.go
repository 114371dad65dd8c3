// Package followsrv is the agent's follow server: it authenticates each follower,
// holds its request to the agent's limits, gives it selector slots of the kernel's,
// routes the tracer's events to it through a bounded queue, assembles its journeys and
// streams them as followapi frames, and evicts it when it stops reading.
//
// It depends on the tracer only through the small Source interface, so a fake source
// drives its tests without root. It must not attach anything, parse flags or print to
// stdout; the agent command wires it to the real tracer.
package followsrv
