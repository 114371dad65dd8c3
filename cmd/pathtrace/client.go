package main

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
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/followapi"
	"github.com/pathtrace/pathtrace/tracer/kube"
)

// agentAddr is an agent's API address: unix:PATH, tls:HOST:PORT or tcp:HOST:PORT.
type agentAddr struct{ network, addr string }

func (a agentAddr) String() string { return a.network + ":" + a.addr }

// agentAddrs returns the agents to follow through: those named with --agents, or the
// default socket when an agent answers there; none means trace standalone.
func agentAddrs(flag []string) ([]agentAddr, error) {
	if len(flag) == 0 {
		c, err := net.DialTimeout("unix", DefaultAgentSocket, 500*time.Millisecond)
		if err != nil {
			return nil, nil
		}
		c.Close()
		return []agentAddr{{"unix", DefaultAgentSocket}}, nil
	}
	var out []agentAddr
	for _, a := range flag {
		if path, ok := strings.CutPrefix(a, "unix:"); ok && path != "" {
			out = append(out, agentAddr{"unix", path})
			continue
		}
		if scheme, hp, ok := strings.Cut(a, ":"); ok && (scheme == "tcp" || scheme == "tls") {
			if _, _, err := net.SplitHostPort(hp); err == nil {
				out = append(out, agentAddr{scheme, hp})
				continue
			}
		}
		return nil, usageError{fmt.Errorf("--agents %q: want unix:PATH, tls:HOST:PORT or tcp:HOST:PORT", a)}
	}
	return out, nil
}

// kubeAgents finds every node's agent through the API server: the DaemonSet's running
// pods, at their address and the port named "api".
// They serve TLS (deploy/daemonset.yaml).
func kubeAgents(ctx context.Context, r *kube.Resolver, namespace string) ([]agentAddr, error) {
	if r == nil {
		return nil, errors.New("--agents k8s finds the agents through the API server: it needs a kubeconfig or in-cluster config (--kubeconfig)")
	}
	found, err := r.Agents(ctx, namespace, "app.kubernetes.io/name=pathtrace-agent")
	if err != nil {
		return nil, err
	}
	var out []agentAddr
	for _, a := range found {
		out = append(out, agentAddr{"tls", a.Addr})
	}
	return out, nil
}

// agentConn is a follow session with one agent.
type agentConn struct {
	addr  agentAddr
	conn  net.Conn
	r     *bufio.Reader
	reply followapi.Reply
}

// maxReply bounds the agent's reply line.
const maxReply = 1 << 20

// dialAgent connects to an agent and asks it to follow; the agent answers once it
// follows. tlsCfg is for tls: addresses (nil when no --tls-* flag was given).
func dialAgent(a agentAddr, req followapi.Request, tlsCfg *tls.Config) (*agentConn, error) {
	network := a.network
	if network == "tls" {
		if tlsCfg == nil {
			return nil, usageError{fmt.Errorf("agent %s: a TLS agent needs --tls-ca, --tls-cert and --tls-key (pathtrace certs makes them)", a)}
		}
		network = "tcp"
	}
	c, err := net.DialTimeout(network, a.addr, 2*time.Second)
	if err != nil {
		if a.network == "unix" {
			return nil, fmt.Errorf("agent %s: %w (is `pathtrace agent --api %s` running?)", a, err, a)
		}
		return nil, fmt.Errorf("agent %s: %w", a, err)
	}
	if a.network == "tls" {
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
	if a.network != "tls" {
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
	return &agentConn{addr: a, conn: c, r: r, reply: rep}, nil
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

// nodeInfo is what the agent told of its node, for the Joiner.
func (ac *agentConn) nodeInfo() decode.NodeInfo {
	n := decode.NodeInfo{Name: ac.reply.Node, BootID: ac.reply.BootID}
	for _, s := range ac.reply.Addrs {
		if a, err := netip.ParseAddr(s); err == nil {
			n.Addrs = append(n.Addrs, a)
		}
	}
	for _, s := range ac.reply.Pods {
		if p, err := netip.ParsePrefix(s); err == nil {
			n.Pods = append(n.Pods, p)
		}
	}
	return n
}

// followViaAgents asks each agent to follow the selectors and writes what they send
// until the duration, the count, an interrupt or the last agent ends it.
//
// Through one agent, its journeys are copied a whole journey at a time. Through
// several (one per node), the journeys of one packet on several nodes are joined into
// one path (decode.Joiner), with the underlay crossings between them; an agent that
// does not answer is named in the paths that go through its node.
//
// With --pcap each agent also sends its journeys' packets as pcapng, in frames between
// the journeys. One agent's stream is written to the file as it comes; several are
// merged into one pcapng section.
func followViaAgents(addrs []agentAddr, o *followOpts, sels []string, stdout, stderr io.Writer, pc *pcapOut, namer decode.Namer) error {
	var tlsCfg *tls.Config
	if o.tls.Set() || o.caPEM != nil {
		if o.tls.Cert == "" && o.token == "" {
			return usageError{errors.New("following agents over TLS needs --tls-cert and --tls-key, or --agents k8s with a kubeconfig that has a token")}
		}
		var err error
		if tlsCfg, err = followapi.ClientTLS(o.tls, o.caPEM, o.tlsName); err != nil {
			return usageError{err}
		}
	}
	ctx, stop := signalContext()
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	join := len(addrs) > 1
	req := followapi.Request{Token: o.token, Selectors: sels, Proto: o.proto, JSON: o.json || join, Timeout: o.timeout.String(),
		Stall: o.stall.String(), Oneway: o.oneway.String(), Count: o.count, Pcap: pc != nil, SnapLen: o.snaplen}
	if join {
		req.Count = 0 // the client counts paths; a node sees only some of them
	}
	var conns []*agentConn
	defer func() {
		for _, c := range conns {
			c.conn.Close()
		}
	}()
	down := map[string]string{} // agents that did not answer: address → why
	for _, a := range addrs {
		ac, err := dialAgent(a, req, tlsCfg)
		if err != nil {
			var ue usageError
			if !join || errors.As(err, &ue) {
				return err
			}
			fmt.Fprintf(stderr, "pathtrace: warning: %v: paths through its node will say so\n", err)
			down[a.String()] = err.Error()
			continue
		}
		fmt.Fprintf(stderr, "pathtrace: following %s through the agent of node %s (%s): %s\n", strings.Join(sels, ", "), ac.reply.Node, a, ac.reply.Mode)
		for _, w := range ac.reply.Where {
			fmt.Fprintf(stderr, "pathtrace: node %s: %s\n", ac.reply.Node, w)
		}
		for _, cl := range ac.reply.Clamped {
			fmt.Fprintf(stderr, "pathtrace: node %s: the agent's limit: %s\n", ac.reply.Node, cl)
		}
		conns = append(conns, ac)
	}
	if len(conns) == 0 {
		return fmt.Errorf("no agent answered of %d", len(addrs))
	}
	pc.startAgents(len(conns), stderr)
	defer pc.endAgents()
	if o.readyFile != "" {
		var names []string
		for _, c := range conns {
			names = append(names, c.addr.String())
		}
		if err := writeReadyFile(o.readyFile, "agents: "+strings.Join(names, ",")+"\n"); err != nil {
			return err
		}
		defer os.Remove(o.readyFile)
	}
	var written int
	var err error
	if join {
		written, err = joinAgents(ctx, stop, conns, down, o, stdout, stderr, pc, namer)
	} else {
		written, err = copyAgent(ctx, stop, conns[0], o, stdout, stderr, pc)
	}
	if err != nil {
		return err
	}
	what := "journeys"
	if join {
		what = "paths"
	}
	fmt.Fprintf(stderr, "pathtrace: %d %s through %d agent(s)\n", written, what, len(conns))
	return nil
}

// copyAgent copies one agent's journeys as they come.
func copyAgent(ctx context.Context, stop func(), ac *agentConn, o *followOpts, stdout, stderr io.Writer, pc *pcapOut) (int, error) {
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
					fmt.Fprintf(stderr, "pathtrace: warning: agent %s: %v\n", ac.addr, err)
				}
				return
			}
			switch f.Kind {
			case followapi.KindPcap:
				pc.frame(0, f.Data, stderr)
				continue
			case followapi.KindLost, followapi.KindEnd:
				agentNotice(stderr, ac, f)
				continue
			}
			if o.count > 0 && written >= o.count {
				continue
			}
			if _, e := stdout.Write(f.Data); e != nil {
				werr = fmt.Errorf("write output: %w", e)
				return
			}
			if f.Kind == followapi.KindJourney {
				written++
			}
			if o.count > 0 && written >= o.count {
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

// joinAgents reads every agent's journeys, joins them into paths and writes those.
func joinAgents(ctx context.Context, stop func(), conns []*agentConn, down map[string]string, o *followOpts, stdout, stderr io.Writer, pc *pcapOut, namer decode.Namer) (int, error) {
	var nodes []decode.NodeInfo
	for _, c := range conns {
		nodes = append(nodes, c.nodeInfo())
	}
	j := decode.NewJoiner(nodes, max(o.joinWait, o.timeout))
	for name, why := range down {
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
					pc.frame(i, f.Data, stderr)
				case followapi.KindLost, followapi.KindEnd:
					agentNotice(stderr, c, f)
				default:
					lines <- agentLine{i: i, kind: f.Kind, line: f.Data}
				}
			}
		}()
	}
	var w interface {
		WritePath(p *decode.Path) error
	}
	if o.json {
		js := exporter.NewJSON(stdout, exporter.Clock{})
		js.SetNamer(namer)
		w = js
	} else {
		text := exporter.NewText(stdout)
		text.SetNamer(namer)
		w = text
	}
	written, open := 0, len(conns)
	var werr error
	emit := func(paths []*decode.Path) {
		for _, p := range paths {
			if werr != nil || o.count > 0 && written >= o.count {
				return
			}
			if err := w.WritePath(p); err != nil {
				werr = fmt.Errorf("write output: %w", err)
				stop()
				return
			}
			written++
			if o.count > 0 && written >= o.count {
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
					fmt.Fprintf(stderr, "pathtrace: warning: agent of node %s (%s) stopped: %s\n", c.reply.Node, c.addr, why)
					j.SetDown(c.reply.Node, "its agent stopped answering: "+why)
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
					fmt.Fprintf(stderr, "pathtrace: warning: agent of node %s sent a journey that does not parse: %v\n", c.reply.Node, err)
					continue
				}
				leg, err := exporter.FromJSON(&x)
				if err != nil {
					fmt.Fprintf(stderr, "pathtrace: warning: agent of node %s: %v\n", c.reply.Node, err)
					continue
				}
				emit(j.Add(leg, time.Now()))
			case followapi.KindOneWay:
				if o.json {
					stdout.Write(l.line)
					continue
				}
				var x exporter.OneWayJSON
				if json.Unmarshal(l.line, &x) == nil {
					fmt.Fprintf(stdout, "%s → %s TCP one-way\n  %s  %s\n\n", x.Flow.Src, x.Flow.Dst, x.Node, x.Summary)
				}
			}
		}
	}
	for _, c := range conns {
		c.conn.Close()
	}
	// What still waits for another node's journey when tracing stops is unfinished,
	// not lost: those journeys may be on their way.
	if ctx.Err() == nil || o.count == 0 || written < o.count {
		emit(j.Flush())
	}
	go func() {
		for range lines {
		}
	}()
	wg.Wait()
	close(lines)
	st := j.Stats()
	fmt.Fprintf(stderr, "pathtrace: joined %d journeys from %d nodes into %d paths (%d across nodes, %d lost on the underlay, %d through a node whose agent did not answer)\n",
		st.Legs, len(conns), st.Paths, st.Joined, st.UnderlayLost, st.NodeMissing)
	return written, werr
}

// maxFrame bounds one frame from an agent: a journey, or one journey's pcapng blocks.
const maxFrame = 16 << 20

// agentNotice says on stderr what an agent told of the follow: events it lost for this
// follower, or why it ended the follow.
func agentNotice(stderr io.Writer, ac *agentConn, f followapi.Frame) {
	switch f.Kind {
	case followapi.KindLost:
		var l followapi.Lost
		if json.Unmarshal(f.Data, &l) == nil {
			fmt.Fprintf(stderr, "pathtrace: WARNING: agent of node %s lost %d events for this follow (%d in all; %s): journeys they belonged to may be incomplete\n", ac.reply.Node, l.Events, l.Total, l.Where)
		}
	case followapi.KindEnd:
		fmt.Fprintf(stderr, "pathtrace: agent of node %s ended the follow: %.200s\n", ac.reply.Node, f.Data)
	}
}

// kubeAuth prepares following the cluster's agents with the user's Kubernetes
// identity: without --tls-cert, the kubeconfig's bearer token (the agents review it:
// TokenReview, SubjectAccessReview); without --tls-ca, the agents' CA from its
// ConfigMap.
func (o *followOpts) kubeAuth(ctx context.Context, res *kube.Resolver) error {
	if o.tls.Cert == "" {
		rc, desc, err := kube.LoadREST(kube.Config{Kubeconfig: o.kube.kubeconfig})
		if err != nil {
			return err
		}
		if rc == nil {
			return fmt.Errorf("--agents k8s: %s", desc)
		}
		if o.token, err = kube.BearerToken(rc); err != nil {
			return fmt.Errorf("--agents k8s (%s): %w", desc, err)
		}
	}
	if o.tls.CA == "" {
		ca, err := res.AgentCA(ctx, o.agentNS)
		if err != nil {
			return err
		}
		o.caPEM = ca
	}
	return nil
}
