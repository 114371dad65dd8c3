package followcli

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/decode/diagnose"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/followapi"
)

// Addr is an agent's API address: unix:PATH, tls:HOST:PORT or tcp:HOST:PORT.
type Addr struct{ Network, Addr string }

func (a Addr) String() string { return a.Network + ":" + a.Addr }

// ParseAddr parses unix:PATH, tls:HOST:PORT or tcp:HOST:PORT.
func ParseAddr(s string) (Addr, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok && path != "" {
		return Addr{"unix", path}, nil
	}
	if scheme, hp, ok := strings.Cut(s, ":"); ok && (scheme == "tcp" || scheme == "tls") {
		if _, _, err := net.SplitHostPort(hp); err == nil {
			return Addr{scheme, hp}, nil
		}
	}
	return Addr{}, fmt.Errorf("%q: want unix:PATH, tls:HOST:PORT or tcp:HOST:PORT", s)
}

// ErrUsage marks a dial that cannot succeed as asked (a TLS agent without TLS files):
// the caller's mistake, not the agent's.
var ErrUsage = errors.New("usage")

// Conn is a follow session with one agent.
type Conn struct {
	Addr  Addr
	Reply followapi.Reply // the agent's answer: its node, mode, addresses, what it granted
	conn  net.Conn
	r     *bufio.Reader
}

// Close ends the follow.
func (ac *Conn) Close() error { return ac.conn.Close() }

// maxReply bounds the agent's reply line.
const maxReply = 1 << 20

// Dial connects to an agent and asks it to follow; the agent answers once it
// follows. tlsCfg is for tls: addresses (nil when no --tls-* flag was given).
func Dial(a Addr, req followapi.Request, tlsCfg *tls.Config) (*Conn, error) {
	network := a.Network
	if network == "tls" {
		if tlsCfg == nil {
			return nil, fmt.Errorf("%w: agent %s: a TLS agent needs --tls-ca, --tls-cert and --tls-key (pathtrace certs makes them)", ErrUsage, a)
		}
		network = "tcp"
	}
	c, err := net.DialTimeout(network, a.Addr, 2*time.Second)
	if err != nil {
		if a.Network == "unix" {
			return nil, fmt.Errorf("agent %s: %w (is `pathtrace agent --api %s` running?)", a, err, a)
		}
		return nil, fmt.Errorf("agent %s: %w", a, err)
	}
	if a.Network == "tls" {
		tc := tls.Client(c, tlsCfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("agent %s: TLS: %w", a, err)
		}
		tc.SetDeadline(time.Time{})
		c = tc
	}
	req.Version = followapi.Version
	if a.Network != "tls" {
		req.Token = "" // a token goes over TLS only
	}
	b, _ := json.Marshal(req)
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, fmt.Errorf("agent %s: %w", a, err)
	}
	c.SetWriteDeadline(time.Time{})
	r := bufio.NewReaderSize(c, 64<<10)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := readReply(r)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("agent %s: no answer: %w", a, err)
	}
	c.SetReadDeadline(time.Time{})
	var rep followapi.Reply
	if err := json.Unmarshal(line, &rep); err != nil || !rep.OK {
		if rep.Error == "" && err != nil {
			rep.Error = err.Error()
		}
		c.Close()
		return nil, fmt.Errorf("agent %s refused: %s", a, rep.Error)
	}
	return &Conn{Addr: a, conn: c, r: r, Reply: rep}, nil
}

// readReply reads the reply line, at most maxReply bytes.
func readReply(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > maxReply {
			return nil, fmt.Errorf("a reply longer than %d bytes", maxReply)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// NodeInfo is what the agent told of its node, for the Joiner.
func (ac *Conn) NodeInfo() decode.NodeInfo {
	n := decode.NodeInfo{Name: ac.Reply.Node, BootID: ac.Reply.BootID}
	for _, s := range ac.Reply.Addrs {
		if a, err := netip.ParseAddr(s); err == nil {
			n.Addrs = append(n.Addrs, a)
		}
	}
	for _, s := range ac.Reply.Pods {
		if p, err := netip.ParsePrefix(s); err == nil {
			n.Pods = append(n.Pods, p)
		}
	}
	return n
}

// Sink takes what an agent sends besides journeys: pcapng blocks (agent i of those
// followed), and the agent's notices: events it lost for this follow, why it ended it.
type Sink struct {
	Pcap   func(i int, b []byte) // nil: dropped (not asked for)
	Notice func(ac *Conn, f followapi.Frame)
	Warn   io.Writer // trouble with a stream
}

// Copy writes one agent's journeys and reports to out as they come, until ctx ends,
// the agent ends the stream, or count journeys (0: no limit) were written; stop is
// called when it ends on its own. It returns the journeys written, counted by frame.
func Copy(ctx context.Context, stop func(), ac *Conn, count int, out io.Writer, sink Sink) (int, error) {
	written := 0
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer stop()
		for {
			f, err := followapi.ReadFrame(ac.r, maxFrame)
			if err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					fmt.Fprintf(sink.Warn, "pathtrace: warning: agent %s: %v\n", ac.Addr, err)
				}
				return
			}
			switch f.Kind {
			case followapi.KindPcap:
				if sink.Pcap != nil {
					sink.Pcap(0, f.Data)
				}
				continue
			case followapi.KindLost, followapi.KindEnd:
				sink.Notice(ac, f)
				continue
			}
			if count > 0 && written >= count {
				continue
			}
			if _, e := out.Write(f.Data); e != nil {
				werr = fmt.Errorf("write output: %w", e)
				return
			}
			if f.Kind == followapi.KindJourney {
				written++
			}
			if count > 0 && written >= count {
				return
			}
		}
	}()
	<-ctx.Done()
	ac.conn.Close()
	<-done
	return written, werr
}

// agentLine is one line an agent sent, or the end of its stream.
type agentLine struct {
	i    int
	kind string // followapi.KindJourney or KindOneWay
	line []byte
	err  error
}

// JoinConfig says how Join joins and writes.
type JoinConfig struct {
	Count int           // paths to write; 0: no limit
	Wait  time.Duration // how long a packet's journey on one node waits for the others'
	JSON  bool          // paths as JSON lines, else text
	Namer decode.Namer
	Down  map[string]string // agents that did not answer: address → why
}

// Join reads every agent's journeys (JSON frames), joins them into paths and writes
// those to out, until ctx ends, every agent has ended, or Count paths were written.
// It returns the paths written and the joiner's account.
func Join(ctx context.Context, stop func(), conns []*Conn, cfg JoinConfig, out io.Writer, sink Sink) (int, decode.JoinStats, error) {
	stdout, stderr := out, sink.Warn
	var nodes []decode.NodeInfo
	for _, c := range conns {
		nodes = append(nodes, c.NodeInfo())
	}
	j := decode.NewJoiner(nodes, cfg.Wait)
	for name, why := range cfg.Down {
		j.SetDown(name, why)
	}
	lines := make(chan agentLine, 256)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				f, err := followapi.ReadFrame(c.r, maxFrame)
				if err != nil {
					lines <- agentLine{i: i, err: err}
					return
				}
				switch f.Kind {
				case followapi.KindPcap:
					if sink.Pcap != nil {
						sink.Pcap(i, f.Data)
					}
				case followapi.KindLost, followapi.KindEnd:
					sink.Notice(c, f)
				default:
					lines <- agentLine{i: i, kind: f.Kind, line: f.Data}
				}
			}
		}()
	}
	var w interface {
		WritePath(p *decode.Path) error
	}
	if cfg.JSON {
		js := exporter.NewJSON(stdout, exporter.Clock{})
		js.SetNamer(cfg.Namer)
		w = js
	} else {
		text := exporter.NewText(stdout)
		text.SetNamer(cfg.Namer)
		w = text
	}
	written, open := 0, len(conns)
	var werr error
	emit := func(paths []*decode.Path) {
		for _, p := range paths {
			if werr != nil || cfg.Count > 0 && written >= cfg.Count {
				return
			}
			diagnose.Path(p, j)
			if err := w.WritePath(p); err != nil {
				werr = fmt.Errorf("write output: %w", err)
				stop()
				return
			}
			written++
			if cfg.Count > 0 && written >= cfg.Count {
				stop()
			}
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-tick.C:
			emit(j.Expire(now))
		case l := <-lines:
			c := conns[l.i]
			if l.err != nil {
				open--
				if ctx.Err() == nil {
					why := "its connection ended"
					if !errors.Is(l.err, io.EOF) {
						why = l.err.Error()
					}
					fmt.Fprintf(stderr, "pathtrace: warning: agent of node %s (%s) stopped: %s\n", c.Reply.Node, c.Addr, why)
					j.SetDown(c.Reply.Node, "its agent stopped answering: "+why)
				}
				if open == 0 {
					break loop
				}
				continue
			}
			switch l.kind {
			case followapi.KindJourney:
				var x exporter.JourneyJSON
				if err := json.Unmarshal(l.line, &x); err != nil {
					fmt.Fprintf(stderr, "pathtrace: warning: agent of node %s sent a journey that does not parse: %v\n", c.Reply.Node, err)
					continue
				}
				leg, err := exporter.FromJSON(&x)
				if err != nil {
					fmt.Fprintf(stderr, "pathtrace: warning: agent of node %s: %v\n", c.Reply.Node, err)
					continue
				}
				emit(j.Add(leg, time.Now()))
			case followapi.KindOneWay:
				if cfg.JSON {
					stdout.Write(l.line)
					continue
				}
				var x exporter.OneWayJSON
				if json.Unmarshal(l.line, &x) == nil {
					fmt.Fprintf(stdout, "%s → %s TCP one-way\n  %s  %s\n", x.Flow.Src, x.Flow.Dst, x.Node, x.Summary)
					exporter.WriteDiagnosis(stdout, exporter.BoundDiagnosis(x.Diagnosis), "  ")
					fmt.Fprintln(stdout)
				}
			}
		}
	}
	for _, c := range conns {
		c.conn.Close()
	}
	// What still waits for another node's journey when tracing stops is unfinished,
	// not lost: those journeys may be on their way.
	if ctx.Err() == nil || cfg.Count == 0 || written < cfg.Count {
		emit(j.Flush())
	}
	go func() {
		for range lines {
		}
	}()
	wg.Wait()
	close(lines)
	return written, j.Stats(), werr
}

// maxFrame bounds one frame from an agent: a journey, or one journey's pcapng blocks.
const maxFrame = 16 << 20

// Notice says on stderr what an agent told of the follow: events it lost for this
// follower, or why it ended the follow.
func Notice(stderr io.Writer, ac *Conn, f followapi.Frame) {
	switch f.Kind {
	case followapi.KindLost:
		var l followapi.Lost
		if json.Unmarshal(f.Data, &l) == nil {
			fmt.Fprintf(stderr, "pathtrace: WARNING: agent of node %s lost %d events for this follow (%d in all; %s): journeys they belonged to may be incomplete\n", ac.Reply.Node, l.Events, l.Total, l.Where)
		}
	case followapi.KindEnd:
		fmt.Fprintf(stderr, "pathtrace: agent of node %s ended the follow: %.200s\n", ac.Reply.Node, f.Data)
	}
}
