package followapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// Version is the protocol version this build speaks.
const Version = 1

// Request is what a follower asks an agent for, as one JSON line.
type Request struct {
	Version int `json:"version"`
	// Token: a Kubernetes bearer token, for an agent that lets RBAC decide who may
	// follow (agent --auth-kube) and a follower without a client certificate. Sent
	// only over TLS; never logged.
	Token     string   `json:"token,omitempty"`
	Selectors []string `json:"selectors"`
	Proto     string   `json:"proto,omitempty"`
	// JSON: journeys as JSON lines (exporter.JourneyJSON) rather than text blocks.
	JSON    bool   `json:"json,omitempty"`
	Timeout string `json:"timeout,omitempty"` // a journey's end after its last hop
	Stall   string `json:"stall,omitempty"`   // a gap between hops reported as a stall
	Oneway  string `json:"oneway,omitempty"`  // a flow with no answer for this long is one-way; "0": off
	Count   int    `json:"count,omitempty"`   // journeys to send, then end; 0: the agent's limit
	// Pcap: send the journeys' packets as pcapng too (KindPcap frames, each whole
	// blocks of one pcapng section).
	Pcap    bool `json:"pcap,omitempty"`
	SnapLen int  `json:"snaplen,omitempty"`
	// Doctor: instead of following, the agent answers with its state (Reply.Doctor)
	// and closes; selectors are not needed. The same authentication holds.
	Doctor bool `json:"doctor,omitempty"`
}

// Reply is the agent's first line back: OK and what it granted, or why not.
type Reply struct {
	Version int    `json:"version"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Node    string `json:"node,omitempty"`
	Mode    string `json:"mode,omitempty"`
	// What a client joining several nodes' journeys needs to know of this one: its
	// kernel's boot ID (equal boot IDs share a clock), its addresses and its pods'
	// prefixes (where a packet it forwards goes to).
	BootID string   `json:"boot_id,omitempty"`
	Addrs  []string `json:"addrs,omitempty"`
	Pods   []string `json:"pods,omitempty"`
	// Where the selector's pod is on this node: "10.244.1.23 is the pod behind veth1a23".
	Where []string `json:"where,omitempty"`
	// Granted: the request's values as the agent's limits left them.
	Granted *Granted `json:"granted,omitempty"`
	// Clamped names each value the agent lowered to its limit.
	Clamped []string `json:"clamped,omitempty"`
	// Doctor: the agent's state, a line each (kernel, modes, layout, interfaces,
	// notes), when the request asked for it.
	Doctor []string `json:"doctor,omitempty"`
}

// Granted is what the agent follows with.
type Granted struct {
	Timeout string `json:"timeout"`
	Stall   string `json:"stall"`
	Oneway  string `json:"oneway"`
	Count   int    `json:"count"`
	SnapLen int    `json:"snaplen,omitempty"`
}

// Limits are what an agent allows a follower. The zero value is not useful: start from
// DefaultLimits.
type Limits struct {
	MaxRequest   int           // bytes in the request line
	MaxConns     int           // connections served at once, all followers together
	MaxPerClient int           // follows at once per authenticated identity
	MaxSelectors int           // selectors per identity, of the kernel's slots
	FollowRate   float64       // new follows per second, all followers together
	FollowBurst  int           // new follows at once before the rate applies
	MaxTimeout   time.Duration // a journey's timeout
	MaxStall     time.Duration
	MaxOneway    time.Duration
	MaxCount     int           // journeys per follow; also the default
	MaxSnapLen   int           // pcap bytes per packet
	WriteTimeout time.Duration // a follower that takes no frame for this long is evicted
	Handshake    time.Duration // authentication and request, from the connection
	QueueLen     int           // events buffered per follower; the excess is counted and told
	MaxFrame     int           // bytes in one frame a client accepts
}

// DefaultLimits are an agent's limits unless its flags say otherwise.
func DefaultLimits() Limits {
	return Limits{
		MaxRequest:   16 << 10,
		MaxConns:     32,
		MaxPerClient: 4,
		MaxSelectors: 4,
		FollowRate:   2,
		FollowBurst:  8,
		MaxTimeout:   30 * time.Second,
		MaxStall:     10 * time.Second,
		MaxOneway:    5 * time.Minute,
		MaxCount:     1_000_000,
		MaxSnapLen:   decode.SnapMax,
		WriteTimeout: 10 * time.Second,
		Handshake:    10 * time.Second,
		QueueLen:     4096,
		MaxFrame:     16 << 20,
	}
}

// Follow is a request checked against the limits: parsed, bounded, what the agent does.
type Follow struct {
	Selectors              []decode.Selector
	Timeout, Stall, Oneway time.Duration
	Count, SnapLen         int
	JSON, Pcap             bool
	Clamped                []string
	SelectorText           []string
}

// Granted is the reply's account of the follow.
func (f *Follow) Granted() *Granted {
	return &Granted{Timeout: f.Timeout.String(), Stall: f.Stall.String(), Oneway: f.Oneway.String(),
		Count: f.Count, SnapLen: f.SnapLen}
}

// ErrTooLong is a request line longer than the agent takes.
var ErrTooLong = errors.New("request too long")

// ReadRequest reads one request line of at most max bytes (newline included) and
// parses it. It never holds more than max bytes of what the peer sent.
func ReadRequest(r io.Reader, max int) (Request, error) {
	line, err := readLine(r, max)
	if err != nil {
		return Request{}, err
	}
	var req Request
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("bad request: %v", err)
	}
	return req, nil
}

// readLine reads up to and including '\n', at most max bytes, one byte-slice read at a
// time into a buffer that never grows past max.
func readLine(r io.Reader, max int) ([]byte, error) {
	buf := make([]byte, 0, min(max, 4096))
	one := make([]byte, 512)
	for {
		room := max - len(buf)
		if room <= 0 {
			return nil, fmt.Errorf("%w: more than %d bytes without a newline", ErrTooLong, max)
		}
		n, err := r.Read(one[:min(len(one), room)])
		if i := bytes.IndexByte(one[:n], '\n'); i >= 0 {
			// A follower sends nothing after its request line: bytes after the
			// newline are not part of the protocol and are dropped.
			return append(buf, one[:i+1]...), nil
		}
		buf = append(buf, one[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("no request: the connection closed before a newline")
			}
			return nil, err
		}
	}
}

// Check parses a request and holds it to the limits: malformed values and more
// selectors than allowed are errors; durations, count and snaplen above the limits
// are lowered to them and named in Clamped.
func (l Limits) Check(req Request) (*Follow, error) {
	if req.Version != Version {
		return nil, fmt.Errorf("protocol version %d: this agent speaks version %d (update pathtrace on one side)", req.Version, Version)
	}
	if len(req.Selectors) == 0 {
		return nil, errors.New("no selector")
	}
	if len(req.Selectors) > l.MaxSelectors {
		return nil, fmt.Errorf("%d selectors: this agent allows %d per follower", len(req.Selectors), l.MaxSelectors)
	}
	proto, err := decode.ParseProto(req.Proto)
	if err != nil {
		return nil, err
	}
	f := &Follow{JSON: req.JSON, Pcap: req.Pcap}
	for _, s := range req.Selectors {
		sel, err := decode.ParseSelector(s)
		if err != nil {
			return nil, err
		}
		sel.Proto = proto
		f.Selectors = append(f.Selectors, sel)
		f.SelectorText = append(f.SelectorText, s)
	}
	dur := func(name, s string, def, max time.Duration, zeroOK bool) (time.Duration, error) {
		if s == "" {
			return def, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d == 0 && !zeroOK {
			return 0, fmt.Errorf("%s %q: want a positive duration such as 500ms", name, s)
		}
		if d > max {
			f.Clamped = append(f.Clamped, fmt.Sprintf("%s %s lowered to %s", name, d, max))
			d = max
		}
		return d, nil
	}
	if f.Timeout, err = dur("timeout", req.Timeout, 500*time.Millisecond, l.MaxTimeout, false); err != nil {
		return nil, err
	}
	if f.Stall, err = dur("stall", req.Stall, 10*time.Millisecond, l.MaxStall, true); err != nil {
		return nil, err
	}
	if f.Oneway, err = dur("oneway", req.Oneway, 3*time.Second, l.MaxOneway, true); err != nil {
		return nil, err
	}
	switch {
	case req.Count < 0:
		return nil, fmt.Errorf("count %d: want 0 (the agent's limit) or more", req.Count)
	case req.Count == 0:
		f.Count = l.MaxCount
	case req.Count > l.MaxCount:
		f.Clamped = append(f.Clamped, fmt.Sprintf("count %d lowered to %d", req.Count, l.MaxCount))
		f.Count = l.MaxCount
	default:
		f.Count = req.Count
	}
	if req.Pcap {
		switch {
		case req.SnapLen < 0:
			return nil, fmt.Errorf("snaplen %d: want 0 (all the agent keeps) or more", req.SnapLen)
		case req.SnapLen == 0 || req.SnapLen > l.MaxSnapLen:
			if req.SnapLen > l.MaxSnapLen {
				f.Clamped = append(f.Clamped, fmt.Sprintf("snaplen %d lowered to %d", req.SnapLen, l.MaxSnapLen))
			}
			f.SnapLen = l.MaxSnapLen
		default:
			f.SnapLen = req.SnapLen
		}
	}
	return f, nil
}

// Frame kinds.
const (
	KindJourney = "journey" // one journey: a text block or a JSON line
	KindOneWay  = "oneway"  // one one-way flow report
	KindPcap    = "pcapng"  // whole pcapng blocks of the journeys just sent
	KindLost    = "lost"    // JSON Lost: events this follower lost
	KindEnd     = "end"     // why the agent ended the follow; nothing follows
)

// Lost tells a follower that events meant for it were lost.
type Lost struct {
	Events uint64 `json:"events"` // since the last notice
	Total  uint64 `json:"total"`  // since the follow began
	Where  string `json:"where"`  // "queue": the follower did not keep up
}

// Frame is one item of the stream after the reply.
type Frame struct {
	Kind string
	Data []byte
}

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, kind string, data []byte) error {
	hdr := make([]byte, 0, 32)
	hdr = append(hdr, kind...)
	hdr = append(hdr, ' ')
	hdr = strconv.AppendInt(hdr, int64(len(data)), 10)
	hdr = append(hdr, '\n')
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// ReadFrame reads one frame whose data is at most max bytes. A header that is not one
// (an agent speaking another protocol, garbage) is an error, not a guess.
func ReadFrame(r *bufio.Reader, max int) (Frame, error) {
	hdr, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return Frame{}, errors.New("frame header too long")
		}
		if errors.Is(err, io.EOF) && len(hdr) == 0 {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("frame header: %w", err)
	}
	sp := bytes.IndexByte(hdr, ' ')
	if sp <= 0 || sp > 16 {
		return Frame{}, fmt.Errorf("not a frame header: %q", truncate(hdr))
	}
	kind := string(hdr[:sp])
	switch kind {
	case KindJourney, KindOneWay, KindPcap, KindLost, KindEnd:
	default:
		return Frame{}, fmt.Errorf("unknown frame kind %q", truncate(hdr[:sp]))
	}
	n, err := strconv.Atoi(string(hdr[sp+1 : len(hdr)-1]))
	if err != nil || n < 0 {
		return Frame{}, fmt.Errorf("frame length %q", truncate(hdr[sp+1:len(hdr)-1]))
	}
	if n > max {
		return Frame{}, fmt.Errorf("a %s frame of %d bytes: more than the %d this client takes", kind, n, max)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return Frame{}, fmt.Errorf("%s frame of %d bytes: %w", kind, n, err)
	}
	return Frame{Kind: kind, Data: data}, nil
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}
