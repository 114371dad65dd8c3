// Package followapi is the follow protocol between a pathtrace agent and its
// followers, in one place for both sides: the request, the reply, the limits an agent
// holds a request to, the framing of the stream that follows the reply, and the TLS
// configuration of both ends.
//
// The protocol, version 1:
//
//  1. The follower sends one JSON line, a Request, of at most Limits.MaxRequest bytes.
//  2. The agent authenticates the follower (the TLS client certificate, or the peer's
//     credentials on a unix socket) before it reads a byte of the request's content
//     into anything but the size-bounded buffer, checks the request against its
//     limits, and answers one JSON line, a Reply: OK with what it granted, or why not.
//  3. Then frames, each a header line "KIND LENGTH\n" and LENGTH bytes: journeys
//     (KindJourney, text or JSON as asked), one-way reports (KindOneWay), pcapng blocks
//     (KindPcap), notices of events lost for this follower (KindLost), and, last, why
//     the agent ended the follow (KindEnd). A follower counts journeys by their frames,
//     never from the text inside them.
//
// The package is pure Go: no kernel, no privileges. It must not hold connections or
// goroutines; the agent's server (exporter/followsrv) and the follow client use it.
package followapi
