// Package exporter writes packet journeys for people and programs: a text block per
// packet (hops with their offsets, then the verdict) and JSON Lines with stable field
// names that later versions only add to.
//
// It must not trace or decode: it formats decode.Journey values it is handed, and
// reports write errors (a closed pipe, a full disk) to its caller instead of
// swallowing them.
package exporter
