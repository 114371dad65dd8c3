// Package followcli is the follower's side of the follow protocol (exporter/followapi):
// it dials agents (unix, TLS, loopback TCP), sends the request, and reads the framed
// stream back: one agent's journeys copied as they come, or several agents' journeys
// joined into one path per packet (decode.Joiner). It counts journeys by frame, never
// from the text inside them, and bounds every line and frame an agent sends.
//
// It must not parse flags or find agents (cmd/pathtrace does, with the Kubernetes API);
// it has no privileges and is tested against the real server (exporter/followsrv) on
// a fake event source.
package followcli
