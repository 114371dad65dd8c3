package followsrv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/followapi"
)

// View is what the source tells followers of the node as it is now.
type View struct {
	Ifaces  []decode.Iface
	Local   []netip.Addr
	Reasons decode.DropReasons
	Pods    []netip.Prefix
	Mode    string
}

// Source is the tracer as the server needs it.
type Source interface {
	// Events are the traced events; the channel closes when the source does.
	Events() <-chan decode.Event
	// SetSelector sets (nil: clears) the kernel's selector in slot; used is the number
	// of slots up to the last one in use.
	SetSelector(slot int, s *decode.Selector, used int) error
	// SetNetfilter turns the netfilter hooks on while anyone follows.
	SetNetfilter(on bool) error
	View() View
	// Where says where on this node the selectors' pods are, for the reply.
	Where(sels []decode.Selector) []string
	// Lost counts the events the tracer lost for everyone (a full ring buffer, its
	// queue) since it started; a follower's journeys in flight then may miss hops.
	Lost() uint64
}

// Explainer names the rule behind a follower's netfilter drops.
type Explainer interface {
	Explain(js []*decode.Journey)
	Close()
}

// Diagnoser gives a follower's journeys and one-way reports that are not a success
// their diagnosis (decode/diagnose.Diagnoser).
type Diagnoser interface {
	Diagnose(js []*decode.Journey)
	OneWay(o *decode.OneWay) *decode.Diagnosis
}

// Config is the server's configuration.
type Config struct {
	Node, BootID string
	Namer        decode.Namer
	Symbols      func() *decode.Symbols // the kernel's, read once when first needed and shared; nil or nil result: addresses in hex
	Limits       followapi.Limits
	Slots        int              // the kernel's selector slots
	Tunnels      decode.Tunnels   // the UDP ports of VXLAN and Geneve (the tracer's); zero: the defaults
	NewExplainer func() Explainer // nil: drops are not explained
	NewDiagnoser func() Diagnoser // nil: no diagnoses
	// OnDiagnosis is called for each diagnosis sent to a follower (counting causes).
	OnDiagnosis func(*decode.Diagnosis)
	// TokenAuth reviews the token of a follower without a client certificate: who it
	// is, and whether it may follow (Kubernetes TokenReview and SubjectAccessReview).
	// nil: tokens are not taken.
	TokenAuth func(ctx context.Context, token string) (string, error)
	OnJourney func(*decode.Journey)  // each journey sent to a follower (counting flagged flows)
	OnOther   func(ev *decode.Event) // events no follower asked for: retransmits, unfollowed drops
	// Doctor gives the agent's state, a line each, to a follower that asks for it
	// (followapi.Request.Doctor); nil: only the mode is told.
	Doctor     func() []string
	Log        *slog.Logger  // what the operator should know, a record per event; nil: discarded
	Now        func() uint64 // CLOCK_MONOTONIC in ns
	WallOffset int64         // wall-clock ns minus Now(), for JSON and pcap times
}

// Identity is who a follower is, as its authentication proved.
type Identity struct {
	Name string // "CN=oncall", "uid 0", "user alice"
	Via  string // "tls", "unix", "loopback", "kube"
	// Anonymous: the connection is encrypted but its peer is not known yet; only a
	// token in its request (Config.TokenAuth) can make it known.
	Anonymous bool
}

func (i Identity) String() string { return i.Name + " (" + i.Via + ")" }

// Authenticator proves who is at the other end of a new connection, before anything
// is sent to it. It may take until the connection's deadline.
type Authenticator func(ctx context.Context, c net.Conn) (Identity, error)

// Refusal reasons counted in Stats.Refused.
const (
	RefusedAuth    = "auth"    // no or a wrong certificate, a peer not allowed
	RefusedRequest = "request" // too long, malformed, or values out of range
	RefusedBusy    = "busy"    // the agent serves its most connections
	RefusedClient  = "client"  // the identity has its most follows or selectors
	RefusedRate    = "rate"    // too many new follows per second
	RefusedSlots   = "slots"   // the kernel's selector slots are taken
	RefusedSource  = "source"  // the tracer could not set the selector
)

// Stats count what the server did.
type Stats struct {
	Follows    uint64            // follows served
	Active     int               // follows now
	Refused    map[string]uint64 // connections refused, by reason
	Evicted    uint64            // followers ended because they stopped reading
	QueueDrops uint64            // events a follower's queue could not take
}

// Server serves followers.
type Server struct {
	src Source
	cfg Config

	mu      sync.Mutex
	closed  bool
	nslots  int
	slots   [maxSlots]*follower // the follower owning each selector slot (one may own several)
	slotSel [maxSlots]decode.Selector
	perID   map[string]*perID
	conns   map[net.Conn]bool
	bucket  bucket

	// rt is what the router reads for each event, published whenever the slots change,
	// so that it never waits for the lock (a follower leaving clears its selectors in
	// the kernel under it: a walk of the flows map).
	rt atomic.Pointer[routing]

	follows, evicted, qdrops atomic.Uint64
	refused                  sync.Map // reason → *atomic.Uint64
	nconns                   atomic.Int64
}

type perID struct{ follows, selectors int }

// routing is a snapshot of the slots for the router.
type routing struct {
	slots [maxSlots]*follower
	sels  [maxSlots]decode.Selector
}

// publishLocked hands the router the slots as they are now; s.mu is held.
func (s *Server) publishLocked() {
	s.rt.Store(&routing{slots: s.slots, sels: s.slotSel})
}

type follower struct {
	id     Identity
	conn   net.Conn // nil: a local follower (the capture)
	events chan decode.Event
	sels   []decode.Selector
	lost   atomic.Uint64 // events its queue could not take
	lostNs atomic.Uint64 // the time of the last of them
}

// maxSlots bounds the kernel's selector slots the server manages.
const maxSlots = 16

// New returns a server of src's events.
func New(src Source, cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Slots <= 0 || cfg.Slots > maxSlots {
		cfg.Slots = maxSlots
	}
	s := &Server{src: src, cfg: cfg, nslots: cfg.Slots, perID: map[string]*perID{}, conns: map[net.Conn]bool{}}
	s.bucket = bucket{rate: cfg.Limits.FollowRate, burst: float64(cfg.Limits.FollowBurst), tokens: float64(cfg.Limits.FollowBurst)}
	return s
}

func (s *Server) refuse(reason string) {
	v, _ := s.refused.LoadOrStore(reason, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{Follows: s.follows.Load(), Evicted: s.evicted.Load(), QueueDrops: s.qdrops.Load(), Refused: map[string]uint64{}}
	for _, r := range []string{RefusedAuth, RefusedRequest, RefusedBusy, RefusedClient, RefusedRate, RefusedSlots, RefusedSource} {
		st.Refused[r] = 0
	}
	s.refused.Range(func(k, v any) bool {
		st.Refused[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	s.mu.Lock()
	st.Active = s.followersLocked()
	s.mu.Unlock()
	return st
}

// Followers counts the followers connected now.
func (s *Server) Followers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.followersLocked()
}

func (s *Server) followersLocked() int {
	n := 0
	var seen []*follower
	for _, f := range s.slots {
		if f != nil && f.conn != nil && !slices.Contains(seen, f) {
			seen = append(seen, f)
			n++
		}
	}
	return n
}

func (s *Server) usedSlots() int {
	n := 0
	for i, f := range s.slots {
		if f != nil {
			n = i + 1
		}
	}
	return n
}

// AddLocal gives slot to an in-process follower (the agent's capture) whose events
// arrive on events; it is not counted as a follower and keeps the slot.
func (s *Server) AddLocal(slot int, sel decode.Selector, events chan decode.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slot < 0 || slot >= s.nslots || s.slots[slot] != nil {
		return fmt.Errorf("selector slot %d is not free", slot)
	}
	s.slots[slot], s.slotSel[slot] = &follower{events: events, sels: []decode.Selector{sel}}, sel
	s.publishLocked()
	return s.src.SetSelector(slot, &sel, s.usedSlots())
}

// Shutdown ends the server: detach (the source's close, under the server's lock, so
// that no follower sets a selector after it), then close every follower's connection.
func (s *Server) Shutdown(detach func() error) error {
	s.mu.Lock()
	s.closed = true
	err := detach()
	for c := range s.conns {
		c.Close()
	}
	for i := range s.slots {
		s.slots[i] = nil
	}
	s.publishLocked()
	s.mu.Unlock()
	return err
}

// Serve accepts followers on l until it is closed, each authenticated by auth.
func (s *Server) Serve(ctx context.Context, l net.Listener, auth Authenticator) {
	for {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if s.nconns.Add(1) > int64(s.cfg.Limits.MaxConns) {
			s.nconns.Add(-1)
			s.refuse(RefusedBusy)
			c.Close()
			continue
		}
		go func() {
			defer s.nconns.Add(-1)
			s.serve(ctx, c, auth)
		}()
	}
}

// errEvicted ends a follower that stopped taking frames.
var errEvicted = errors.New("evicted")

func (s *Server) serve(ctx context.Context, c net.Conn, auth Authenticator) {
	defer c.Close()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.conns[c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	lim := s.cfg.Limits
	c.SetDeadline(time.Now().Add(lim.Handshake))
	// Nothing is read into memory or sent before the peer is authenticated.
	id, err := auth(ctx, c)
	if err != nil {
		s.refuse(RefusedAuth)
		s.cfg.Log.Warn(fmt.Sprintf("follower %s refused: %v", c.RemoteAddr(), err), "peer", c.RemoteAddr().String())
		return
	}
	reply := func(r followapi.Reply) {
		r.Version = followapi.Version
		b, _ := json.Marshal(r)
		c.SetWriteDeadline(time.Now().Add(lim.WriteTimeout))
		c.Write(append(b, '\n'))
	}
	req, err := followapi.ReadRequest(c, lim.MaxRequest)
	if err != nil {
		s.refuse(RefusedRequest)
		reply(followapi.Reply{Error: err.Error()})
		return
	}
	if id.Anonymous {
		if req.Token == "" || s.cfg.TokenAuth == nil {
			s.refuse(RefusedAuth)
			s.cfg.Log.Warn(fmt.Sprintf("follower %s refused: no client certificate and no token", c.RemoteAddr()), "peer", c.RemoteAddr().String())
			reply(followapi.Reply{Error: "unauthenticated: present a client certificate, or a Kubernetes token (follow --agents k8s)"})
			return
		}
		user, err := s.cfg.TokenAuth(ctx, req.Token)
		if err != nil {
			s.refuse(RefusedAuth)
			s.cfg.Log.Warn(fmt.Sprintf("follower %s refused: %v", c.RemoteAddr(), err), "peer", c.RemoteAddr().String())
			reply(followapi.Reply{Error: "unauthorized: " + err.Error()})
			return
		}
		id = Identity{Name: "user " + user, Via: "kube"}
	}
	req.Token = ""
	c.SetReadDeadline(time.Time{})
	if req.Doctor {
		if req.Version != followapi.Version {
			s.refuse(RefusedRequest)
			reply(followapi.Reply{Error: fmt.Sprintf("protocol version %d: this agent speaks version %d (update pathtrace on one side)", req.Version, followapi.Version)})
			return
		}
		s.cfg.Log.Info(fmt.Sprintf("%s asked for the agent's state", id), "follower", id.Name, "via", id.Via)
		v := s.src.View()
		r := followapi.Reply{OK: true, Node: s.cfg.Node, Mode: v.Mode, BootID: s.cfg.BootID}
		if s.cfg.Doctor != nil {
			r.Doctor = s.cfg.Doctor()
		}
		reply(r)
		return
	}
	fl, err := lim.Check(req)
	if err != nil {
		s.refuse(RefusedRequest)
		reply(followapi.Reply{Error: err.Error()})
		return
	}
	f := &follower{id: id, conn: c, events: make(chan decode.Event, max(lim.QueueLen, 1)), sels: fl.Selectors}
	slots, why, err := s.take(f)
	if err != nil {
		s.refuse(why)
		reply(followapi.Reply{Error: err.Error()})
		return
	}
	defer s.release(f, slots)
	s.follows.Add(1)
	s.cfg.Log.Info(fmt.Sprintf("%s follows %s", id, strings.Join(fl.SelectorText, " ")), "follower", id.Name, "via", id.Via,
		"selectors", strings.Join(fl.SelectorText, " "))
	s.stream(ctx, f, fl, reply)
}

// take gives the follower its slots, within its identity's and the rate's limits.
func (s *Server) take(f *follower) ([]int, string, error) {
	lim := s.cfg.Limits
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, RefusedSource, errors.New("the agent is stopping")
	}
	p := s.perID[f.id.Name]
	if p == nil {
		p = &perID{}
	}
	if p.follows >= lim.MaxPerClient {
		return nil, RefusedClient, fmt.Errorf("%s already has %d follows, the most this agent allows one follower", f.id.Name, p.follows)
	}
	if p.selectors+len(f.sels) > lim.MaxSelectors {
		return nil, RefusedClient, fmt.Errorf("%s follows %d selectors and asks for %d more: this agent allows %d per follower", f.id.Name, p.selectors, len(f.sels), lim.MaxSelectors)
	}
	if !s.bucket.take(time.Now()) {
		return nil, RefusedRate, fmt.Errorf("more than %g new follows a second: try again in a second", lim.FollowRate)
	}
	var mine []int
	for i, o := range s.slots[:s.nslots] {
		if o == nil && len(mine) < len(f.sels) {
			mine = append(mine, i)
		}
	}
	if len(mine) < len(f.sels) {
		return nil, RefusedSlots, fmt.Errorf("the agent has %d selector slots free (of %d, shared by its followers), this follow needs %d; try again later", len(mine), s.nslots, len(f.sels))
	}
	for k, slot := range mine {
		s.slots[slot], s.slotSel[slot] = f, f.sels[k]
	}
	s.publishLocked()
	var err error
	for k, slot := range mine {
		if err == nil {
			err = s.src.SetSelector(slot, &f.sels[k], s.usedSlots())
		}
	}
	if err == nil {
		err = s.src.SetNetfilter(true) // the hooks serve followers only
	}
	if err != nil {
		s.releaseLocked(f, mine)
		return nil, RefusedSource, err
	}
	p.follows++
	p.selectors += len(f.sels)
	s.perID[f.id.Name] = p
	return mine, "", nil
}

func (s *Server) release(f *follower, slots []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.perID[f.id.Name]; p != nil {
		p.follows--
		p.selectors -= len(f.sels)
		if p.follows <= 0 {
			delete(s.perID, f.id.Name)
		}
	}
	s.releaseLocked(f, slots)
}

func (s *Server) releaseLocked(f *follower, slots []int) {
	for _, slot := range slots {
		if s.slots[slot] == f {
			s.slots[slot], s.slotSel[slot] = nil, decode.Selector{}
		}
	}
	s.publishLocked()
	if s.closed {
		return // detached: nothing to clear
	}
	for _, slot := range slots {
		s.src.SetSelector(slot, nil, s.usedSlots())
	}
	if s.followersLocked() == 0 {
		s.src.SetNetfilter(false)
	}
}

// stream sends the follower its journeys until it goes, its count is reached, it
// stops reading, or the server stops.
func (s *Server) stream(ctx context.Context, f *follower, fl *followapi.Follow, reply func(followapi.Reply)) {
	c, lim := f.conn, s.cfg.Limits
	v := s.src.View()
	var syms *decode.Symbols
	if s.cfg.Symbols != nil {
		syms = s.cfg.Symbols()
	}
	asm := decode.NewAssembler(decode.Config{Node: s.cfg.Node, Timeout: fl.Timeout, Stall: fl.Stall,
		VXLANPorts: s.cfg.Tunnels.VXLANPorts, GenevePorts: s.cfg.Tunnels.GenevePorts, Ifaces: v.Ifaces, LocalAddrs: v.Local, Reasons: v.Reasons, Symbols: syms, KeepBytes: fl.Pcap})
	clock := exporter.Clock{OffsetNs: s.cfg.WallOffset}
	var buf, pbuf bytes.Buffer
	var out exporter.Writer
	if fl.JSON {
		js := exporter.NewJSON(&buf, clock)
		js.SetNamer(s.cfg.Namer)
		out = js
	} else {
		t := exporter.NewText(&buf)
		t.SetNamer(s.cfg.Namer)
		out = t
	}
	var pcap *exporter.Pcap
	if fl.Pcap {
		pcap = exporter.NewPcap(&pbuf, exporter.PcapConfig{Clock: clock, SnapLen: fl.SnapLen,
			Comment: "pathtrace follow " + strings.Join(fl.SelectorText, " ") + " through the agent of node " + s.cfg.Node})
	}
	var expl Explainer
	if s.cfg.NewExplainer != nil {
		// The rule counters are read before the follower's first packet.
		if expl = s.cfg.NewExplainer(); expl != nil {
			defer expl.Close()
		}
	}
	ok := followapi.Reply{OK: true, Node: s.cfg.Node, Mode: v.Mode, BootID: s.cfg.BootID, Granted: fl.Granted(), Clamped: fl.Clamped,
		Where: s.src.Where(fl.Selectors)}
	for _, a := range v.Local {
		ok.Addrs = append(ok.Addrs, a.String())
	}
	for _, p := range v.Pods {
		ok.Pods = append(ok.Pods, p.String())
	}
	reply(ok)

	frame := func(kind string, b []byte) error {
		c.SetWriteDeadline(time.Now().Add(lim.WriteTimeout))
		if err := followapi.WriteFrame(c, kind, b); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return errEvicted
			}
			return err
		}
		return nil
	}
	end := func(why string) {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		followapi.WriteFrame(c, followapi.KindEnd, []byte(why))
	}
	var watch *decode.FlowWatch
	if fl.Oneway > 0 {
		watch = decode.NewFlowWatch(fl.Oneway)
	}
	var diag Diagnoser
	if s.cfg.NewDiagnoser != nil {
		diag = s.cfg.NewDiagnoser()
	}
	written := 0
	emit := func(js []*decode.Journey) error {
		if expl != nil {
			expl.Explain(js)
		}
		for _, j := range js {
			hideKernelAddrs(j) // before the diagnosis quotes the location
		}
		if diag != nil {
			diag.Diagnose(js)
		}
		for _, j := range js {
			if written >= fl.Count {
				return errLimit
			}
			if j.Diagnosis != nil && s.cfg.OnDiagnosis != nil {
				s.cfg.OnDiagnosis(j.Diagnosis)
			}
			if s.cfg.OnJourney != nil {
				s.cfg.OnJourney(j)
			}
			buf.Reset()
			if err := out.Write(j); err != nil {
				return err
			}
			if err := frame(followapi.KindJourney, buf.Bytes()); err != nil {
				return err
			}
			if pcap != nil {
				pbuf.Reset()
				if err := pcap.Write(j); err != nil {
					return err
				}
				if pbuf.Len() > 0 {
					if err := frame(followapi.KindPcap, pbuf.Bytes()); err != nil {
						return err
					}
				}
			}
			written++
			if watch != nil {
				watch.Observe(j)
			}
			asm.Release(j)
		}
		if written >= fl.Count {
			return errLimit
		}
		return nil
	}
	oneway := func(now uint64) error {
		if watch == nil {
			return nil
		}
		for _, o := range watch.Expire(now) {
			if diag != nil {
				if o.Diagnosis = diag.OneWay(o); o.Diagnosis != nil && s.cfg.OnDiagnosis != nil {
					s.cfg.OnDiagnosis(o.Diagnosis)
				}
			}
			buf.Reset()
			if err := out.WriteOneWay(o); err != nil {
				return err
			}
			if err := frame(followapi.KindOneWay, buf.Bytes()); err != nil {
				return err
			}
		}
		return nil
	}
	// Lost events: the follower's own queue's, and the tracer's for everyone. The
	// journeys in flight then are judged incomplete rather than lost, and the follower
	// is told.
	var told uint64
	srcTold := s.src.Lost()
	tellLost := func(now uint64) error {
		if n := s.src.Lost(); n > srcTold {
			asm.EventsLost(n-srcTold, now)
			srcTold = n
		}
		n := f.lost.Load()
		if n == told {
			return nil
		}
		asm.EventsLost(n-told, f.lostNs.Load())
		b, _ := json.Marshal(followapi.Lost{Events: n - told, Total: n, Where: "queue"})
		told = n
		return frame(followapi.KindLost, b)
	}
	// The follower going away ends the follow: a read returns when it closes. It
	// sends nothing after its request; what it does send is read and dropped, at
	// most a little before it is cut off.
	gone := make(chan struct{})
	go func() {
		io.CopyN(io.Discard, c, 4096)
		close(gone)
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			end("the agent is stopping")
			return
		case <-gone:
			return
		case ev, ok := <-f.events:
			if !ok {
				end("the agent is stopping")
				return
			}
			err = emit(asm.Add(&ev))
		case <-tick.C:
			now := s.cfg.Now()
			if err = tellLost(now); err == nil {
				if err = emit(asm.Expire(now)); err == nil {
					err = oneway(now)
				}
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, errLimit):
			end(fmt.Sprintf("%d journeys sent, the count asked for", written))
			return
		case errors.Is(err, errEvicted):
			s.evicted.Add(1)
			s.cfg.Log.Warn(fmt.Sprintf("%s evicted: took no frame for %v", f.id, lim.WriteTimeout), "follower", f.id.Name, "via", f.id.Via)
			end(fmt.Sprintf("evicted: the follower took no frame for %v", lim.WriteTimeout))
			return
		default:
			return // the follower is gone
		}
	}
}

var errLimit = errors.New("journey limit reached")

// Route hands each event to the followers whose selectors caught it, until ctx ends
// or the source's events close.
func (s *Server) Route(ctx context.Context) {
	var p decode.Packet
	events := s.src.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			s.route(&ev, &p)
		}
	}
}

func (s *Server) route(ev *decode.Event, p *decode.Packet) {
	if ev.Kind == decode.KindRetrans || ev.Filter == decode.FilterUnfollowed {
		if s.cfg.OnOther != nil {
			s.cfg.OnOther(ev)
		}
		return
	}
	rt := s.rt.Load()
	if rt == nil || int(ev.Filter) >= s.nslots {
		return
	}
	slots, slotSel := &rt.slots, &rt.sels
	// The kernel names the first selector that matches; its follower, and followers
	// with the same selector, get all it gets (NAT included), those whose selectors
	// overlap it the packets that match them. A follower of several slots gets each
	// packet once.
	parsed := false
	owner, ownerSel := slots[ev.Filter], slotSel[ev.Filter]
	var seen [maxSlots]*follower
	for i, f := range slots {
		if f == nil || slices.Contains(seen[:], f) {
			continue
		}
		seen[i] = f
		if f != owner && (owner == nil || !slices.Contains(f.sels, ownerSel)) {
			if !parsed {
				parsed = true
				if s.cfg.Tunnels.Parse(ev.Packet(), ev.L2, p) != nil {
					*p = decode.Packet{}
				}
			}
			if !wants(f.sels, p) {
				continue
			}
		}
		select {
		case f.events <- *ev:
		default:
			f.lost.Add(1)
			f.lostNs.Store(ev.TimeNs)
			s.qdrops.Add(1)
		}
	}
}

// wants reports whether one of the selectors matches the packet as the kernel's do:
// the flow either way round, or the underlay addresses of a tunnel's packet (when the
// selector's protocol, if any, is the one that carries the tunnel: UDP, 4 or 41).
func wants(sels []decode.Selector, p *decode.Packet) bool {
	if !p.Flow.Src.IsValid() {
		return false
	}
	for _, s := range sels {
		if s.Matches(p.Flow) {
			return true
		}
		if p.Outer != nil && s.Addr.IsValid() && s.Port == 0 && (s.Proto == 0 || s.Proto == p.Outer.Proto()) &&
			(p.Outer.Src == s.Addr || p.Outer.Dst == s.Addr) {
			return true
		}
	}
	return false
}

// bucket is a token bucket: rate tokens a second, at most burst.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *bucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// unnamedLocation stands for a drop location the agent could not name: a raw kernel
// address would tell a follower where the kernel lies in memory (defeating KASLR).
const unnamedLocation = "unknown (the agent cannot read the kernel's symbols)"

// hideKernelAddrs keeps kernel addresses on the node: a drop location that is not
// symbol+offset goes out as unnamedLocation.
func hideKernelAddrs(j *decode.Journey) {
	if d := j.Drop; d != nil && strings.HasPrefix(d.Location, "0x") {
		d.Location, d.Addr = unnamedLocation, 0
	}
}
