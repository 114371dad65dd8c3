// Package pathview draws follow's results as one self-contained HTML page: a section
// per packet with an inline SVG in which every node is a lane, the packet's hops are
// boxes left to right in time order inside their node's lane with the latency from
// the hop before, the underlay crossing between nodes is a connector labelled with
// the outer header, a marker shows where NAT changed the packet's addresses, and the
// drop, stall or loss is marked in a colour of its own with its reason and rule, the
// diagnosis written out below.
//
// It must not fetch, trace or decode: it reads the JSON lines follow writes (kinds
// journey, path and oneway, by their documented field names; other lines are
// ignored) and writes a page that loads nothing (no scripts, no external URLs; a
// Content-Security-Policy that forbids them), with every string from the lines
// escaped, for those strings come from the cluster (pod names, rule text). It keeps
// what it is given within bounds (packets, line length, hops drawn per packet, text
// per label) and says on the page what it left out.
//
// It reads the JSON rather than importing package exporter so that exporter's
// capture recorder can draw its flagged flows with it; exporter's
// TestPathviewFixtures writes testdata/follow.jsonl from the real writers, so that
// a change of the JSON form shows here.
//
// The geometry is fixed (box and column widths, lane and section heights do not
// depend on text), so Layout can say where each hop's box is on the rendered page;
// the browser test checks the marked hop's pixels there.
package pathview
