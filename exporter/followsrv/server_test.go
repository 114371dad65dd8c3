package followsrv

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/followapi"
)

// fakeSource is the tracer without a kernel: events the test sends, and the selectors
// the server set, as the kernel would hold them.
type fakeSource struct {
	events chan decode.Event
	mu     sync.Mutex
	sels   map[int]decode.Selector
	nf     bool
	used   int
	lost   atomic.Uint64
	// clearDelay: how long clearing a selector takes (the kernel's flows map walk).
	clearDelay time.Duration
}

func newFake() *fakeSource {
	return &fakeSource{events: make(chan decode.Event, 1024), sels: map[int]decode.Selector{}}
}

func (f *fakeSource) Events() <-chan decode.Event { return f.events }

func (f *fakeSource) SetSelector(slot int, s *decode.Selector, used int) error {
	if s == nil {
		time.Sleep(f.clearDelay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s == nil {
		delete(f.sels, slot)
	} else {
		f.sels[slot] = *s
	}
	f.used = used
	return nil
}

func (f *fakeSource) SetNetfilter(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nf = on
	return nil
}

func (f *fakeSource) View() View {
	return View{Ifaces: []decode.Iface{{Index: 3, Name: "veth1", Kind: decode.KindPod}, {Index: 4, Name: "eth0", Kind: decode.KindUplink}},
		Local: []netip.Addr{netip.MustParseAddr("192.168.0.1")}, Mode: "fake"}
}

func (f *fakeSource) Where([]decode.Selector) []string { return nil }

func (f *fakeSource) Lost() uint64 { return f.lost.Load() }

// slotOf is the slot the kernel would name for a packet of flow: the first whose
// selector matches, or FilterUnfollowed.
func (f *fakeSource) slotOf(flow decode.Flow) uint8 {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i < 16; i++ {
		if s, ok := f.sels[i]; ok && s.Matches(flow) {
			return uint8(i)
		}
	}
	return decode.FilterUnfollowed
}

func (f *fakeSource) selectors() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sels)
}

// tcpPacket is an IPv4 TCP SYN from src to dst with the IP ID id.
func tcpPacket(src, dst string, id uint16) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	b := make([]byte, 40)
	b[0], b[8], b[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(b[2:], 40)
	binary.BigEndian.PutUint16(b[4:], id)
	copy(b[12:16], s.Addr().AsSlice())
	copy(b[16:20], d.Addr().AsSlice())
	binary.BigEndian.PutUint16(b[20:], s.Port())
	binary.BigEndian.PutUint16(b[22:], d.Port())
	b[32], b[33] = 0x50, 0x02 // data offset 5, SYN
	return b
}

var t0 = time.Now()

func mono() uint64 { return uint64(time.Since(t0)) + 1e9 }

// send puts one packet's hops on veth1 ingress and eth0 egress, slot as the kernel
// would name it.
func (f *fakeSource) send(src, dst string, id uint16) {
	data := tcpPacket(src, dst, id)
	var p decode.Packet
	decode.ParsePacket(data, false, nil, &p)
	slot := f.slotOf(p.Flow)
	for i, hop := range []struct {
		ifindex uint32
		name    string
		dir     decode.Dir
	}{{3, "veth1", decode.Ingress}, {4, "eth0", decode.Egress}} {
		ev := decode.Event{TimeNs: mono() + uint64(i)*1000, Ifindex: hop.ifindex, Kind: decode.KindHop, Dir: hop.dir,
			Filter: slot, Len: uint32(len(data)), Protocol: binary.NativeEndian.Uint16([]byte{8, 0})}
		copy(ev.Ifname[:], hop.name)
		ev.SnapLen = uint16(copy(ev.Data[:], data))
		f.events <- ev
	}
}

type harness struct {
	t   *testing.T
	src *fakeSource
	srv *Server
	ln  net.Listener
	log *strings.Builder
	mu  sync.Mutex
}

// start runs a server on a loopback listener with auth.
func start(t *testing.T, lim followapi.Limits, auth Authenticator, wrap func(net.Listener) net.Listener, opts ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, src: newFake(), log: &strings.Builder{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.ln = ln
	l := ln
	if wrap != nil {
		l = wrap(ln)
	}
	cfg := Config{Node: "node-x", Limits: lim, Slots: 8, Now: mono, Log: slog.New(slog.NewTextHandler(lockedWriter{&h.mu, h.log}, nil))}
	for _, o := range opts {
		o(&cfg)
	}
	h.srv = New(h.src, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { h.srv.Serve(ctx, l, auth); done <- struct{}{} }()
	go func() { h.srv.Route(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		h.srv.Shutdown(func() error { return nil })
		<-done
		<-done
	})
	return h
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (h *harness) logText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.log.String()
}

type conn struct {
	c     net.Conn
	r     *bufio.Reader
	reply followapi.Reply
}

// follow connects (plain TCP, or through dial) and sends req; it returns the reply.
func (h *harness) follow(req followapi.Request, dial func(string) (net.Conn, error)) (*conn, error) {
	h.t.Helper()
	if dial == nil {
		dial = func(a string) (net.Conn, error) { return net.Dial("tcp", a) }
	}
	c, err := dial(h.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	req.Version = followapi.Version
	b, _ := json.Marshal(req)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadBytes('\n')
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	out := &conn{c: c, r: r}
	if err := json.Unmarshal(line, &out.reply); err != nil {
		c.Close()
		return nil, err
	}
	h.t.Cleanup(func() { c.Close() })
	return out, nil
}

// frames reads frames until want journeys came, or the deadline.
func (c *conn) journeys(t *testing.T, want int, wait time.Duration) ([]exporter.JourneyJSON, []followapi.Frame) {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(wait))
	defer c.c.SetReadDeadline(time.Time{})
	var js []exporter.JourneyJSON
	var other []followapi.Frame
	for len(js) < want {
		f, err := followapi.ReadFrame(c.r, 1<<20)
		if err != nil {
			break
		}
		if f.Kind != followapi.KindJourney {
			other = append(other, f)
			continue
		}
		var j exporter.JourneyJSON
		if err := json.Unmarshal(f.Data, &j); err != nil {
			t.Fatalf("journey frame %q: %v", f.Data, err)
		}
		js = append(js, j)
	}
	return js, other
}

// eachConnAnother authenticates each connection as a follower of its own (c1, c2, ...).
func eachConnAnother() Authenticator {
	var n int
	var mu sync.Mutex
	return func(context.Context, net.Conn) (Identity, error) {
		mu.Lock()
		defer mu.Unlock()
		n++
		return Identity{Name: fmt.Sprint("c", n), Via: "test"}, nil
	}
}

func anyone(context.Context, net.Conn) (Identity, error) {
	return Identity{Name: "tester", Via: "test"}, nil
}

func TestRoutesEachFollowerItsOwn(t *testing.T) {
	h := start(t, followapi.DefaultLimits(), anyone, nil)
	a, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.2:80"}, JSON: true, Timeout: "500ms"}, nil)
	if err != nil || !a.reply.OK {
		t.Fatalf("follow: %v %+v", err, a.reply)
	}
	b, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.3:443"}, JSON: true, Timeout: "500ms"}, nil)
	if err != nil || !b.reply.OK {
		t.Fatalf("follow: %v %+v", err, b.reply)
	}
	if h.src.selectors() != 2 || !h.src.nf {
		t.Fatalf("kernel selectors %d, netfilter %v; want 2 and on", h.src.selectors(), h.src.nf)
	}
	h.src.send("10.0.0.1:1000", "10.0.0.2:80", 1)
	h.src.send("10.0.0.1:1001", "10.0.0.3:443", 2)
	h.src.send("10.0.0.1:1002", "10.0.0.9:22", 3) // nobody's
	ja, _ := a.journeys(t, 1, 2*time.Second)
	jb, _ := b.journeys(t, 1, 2*time.Second)
	if len(ja) != 1 || ja[0].Flow.Dst != "10.0.0.2:80" || len(ja[0].Hops) != 2 || ja[0].Node != "node-x" {
		t.Errorf("follower a got %+v", ja)
	}
	if len(jb) != 1 || jb[0].Flow.Dst != "10.0.0.3:443" {
		t.Errorf("follower b got %+v", jb)
	}
	if a.reply.Granted == nil || a.reply.Granted.Timeout != "500ms" || a.reply.Granted.Count != followapi.DefaultLimits().MaxCount {
		t.Errorf("granted %+v", a.reply.Granted)
	}
	// Gone: their selectors and the netfilter hooks go with them.
	a.c.Close()
	b.c.Close()
	waitFor(t, func() bool { return h.src.selectors() == 0 && !h.src.nf }, "selectors cleared after both left")
	if st := h.srv.Stats(); st.Follows != 2 || st.Active != 0 {
		t.Errorf("stats %+v", st)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out: %s", what)
}

// Without the kernel's symbols a drop location would be a raw kernel address: it never
// leaves the agent.
func TestNoKernelAddress(t *testing.T) {
	h := start(t, followapi.DefaultLimits(), anyone, nil)
	c, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, JSON: true, Timeout: "20ms"}, nil)
	if err != nil || !c.reply.OK {
		t.Fatal(err, c.reply)
	}
	data := tcpPacket("10.0.0.1:1000", "10.0.0.2:80", 7)
	ev := decode.Event{TimeNs: mono(), Kind: decode.KindDrop, Dir: decode.NoDir, Filter: 0, Location: 0xffffffffc0a412c8,
		Len: uint32(len(data)), Protocol: binary.NativeEndian.Uint16([]byte{8, 0})}
	ev.SnapLen = uint16(copy(ev.Data[:], data))
	h.src.events <- ev
	js, _ := c.journeys(t, 1, 2*time.Second)
	if len(js) != 1 || js[0].Drop == nil {
		t.Fatalf("want one dropped journey, got %+v", js)
	}
	b, _ := json.Marshal(js[0])
	if strings.Contains(string(b), "ffffffff") || strings.Contains(strings.ToLower(string(b)), "0xffff") || js[0].Drop.Location != unnamedLocation {
		t.Errorf("a kernel address left the agent: %s", b)
	}
}

func TestCountEndsTheFollow(t *testing.T) {
	h := start(t, followapi.DefaultLimits(), anyone, nil)
	c, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, JSON: true, Timeout: "20ms", Count: 2}, nil)
	if err != nil || !c.reply.OK {
		t.Fatal(err, c.reply)
	}
	for i := range 5 {
		h.src.send("10.0.0.1:1000", "10.0.0.2:80", uint16(10+i))
	}
	js, other := c.journeys(t, 3, 2*time.Second)
	if len(js) != 2 {
		t.Errorf("want 2 journeys, got %d", len(js))
	}
	if len(other) != 1 || other[0].Kind != followapi.KindEnd || !strings.Contains(string(other[0].Data), "2 journeys sent") {
		t.Errorf("want an end frame after the count, got %+v", other)
	}
}

// What the agent refuses, it refuses before anything is followed, says why, and counts.
func TestRefusals(t *testing.T) {
	lim := followapi.DefaultLimits()
	lim.MaxPerClient, lim.MaxSelectors, lim.FollowBurst, lim.FollowRate = 2, 3, 100, 100
	h := start(t, lim, anyone, nil)
	for _, tc := range []struct {
		req  followapi.Request
		want string
	}{
		{followapi.Request{}, "no selector"},
		{followapi.Request{Selectors: []string{"1.2.3"}}, "not an IP address"},
		{followapi.Request{Selectors: []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"}}, "allows 3 per follower"},
		{followapi.Request{Selectors: []string{"1.1.1.1"}, Timeout: "-1s"}, "timeout"},
		{followapi.Request{Selectors: []string{"1.1.1.1"}, Count: -1}, "count -1"},
	} {
		c, err := h.follow(tc.req, nil)
		if err != nil || c.reply.OK || !strings.Contains(c.reply.Error, tc.want) {
			t.Errorf("%+v: %v %+v; want refused with %q", tc.req, err, c.reply, tc.want)
		}
	}
	// A wrong version.
	c, _ := net.Dial("tcp", h.ln.Addr().String())
	fmt.Fprintf(c, `{"version":99,"selectors":["1.1.1.1"]}`+"\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.Contains(line, "protocol version 99") {
		t.Errorf("version 99: %q", line)
	}
	// Clamped, not refused.
	ok, err := h.follow(followapi.Request{Selectors: []string{"1.1.1.1"}, Timeout: "2562047h", Count: 1 << 40}, nil)
	if err != nil || !ok.reply.OK || ok.reply.Granted.Timeout != lim.MaxTimeout.String() || ok.reply.Granted.Count != lim.MaxCount || len(ok.reply.Clamped) != 2 {
		t.Fatalf("clamped follow: %v %+v", err, ok.reply)
	}
	// Per identity: 2 follows and 3 selectors at most; another follow is refused.
	ok2, _ := h.follow(followapi.Request{Selectors: []string{"1.1.1.2", "1.1.1.3"}}, nil)
	if !ok2.reply.OK {
		t.Fatalf("second follow: %+v", ok2.reply)
	}
	third, _ := h.follow(followapi.Request{Selectors: []string{"1.1.1.4"}}, nil)
	if third.reply.OK || !strings.Contains(third.reply.Error, "already has 2 follows") {
		t.Errorf("third follow: %+v", third.reply)
	}
	st := h.srv.Stats()
	if st.Refused[RefusedRequest] != 6 || st.Refused[RefusedClient] != 1 {
		t.Errorf("refusals %v", st.Refused)
	}
}

func TestSlotsAndRate(t *testing.T) {
	lim := followapi.DefaultLimits()
	lim.FollowRate, lim.FollowBurst, lim.MaxPerClient, lim.MaxSelectors = 0.001, 3, 100, 100
	h := start(t, lim, eachConnAnother(), nil)
	// 8 slots: 7 then 2 more do not fit.
	big, _ := h.follow(followapi.Request{Selectors: []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.1.6", "1.1.1.7"}}, nil)
	if !big.reply.OK {
		t.Fatalf("7 selectors: %+v", big.reply)
	}
	two, _ := h.follow(followapi.Request{Selectors: []string{"2.2.2.1", "2.2.2.2"}}, nil)
	if two.reply.OK || !strings.Contains(two.reply.Error, "1 selector slots free") {
		t.Errorf("2 more selectors: %+v", two.reply)
	}
	one, _ := h.follow(followapi.Request{Selectors: []string{"2.2.2.1"}}, nil)
	if !one.reply.OK {
		t.Errorf("the last slot: %+v", one.reply)
	}
	// The burst (3) is spent: the next is refused for the rate.
	again, _ := h.follow(followapi.Request{Selectors: []string{"3.3.3.3"}}, nil)
	if again.reply.OK || !strings.Contains(again.reply.Error, "new follows a second") {
		t.Errorf("beyond the rate: %+v", again.reply)
	}
	if st := h.srv.Stats(); st.Refused[RefusedSlots] != 1 || st.Refused[RefusedRate] != 1 {
		t.Errorf("refusals %v", st.Refused)
	}
}

// A request line without end is cut off at the limit; the agent's memory does not grow
// with it.
func TestLongRequest(t *testing.T) {
	lim := followapi.DefaultLimits()
	h := start(t, lim, anyone, nil)
	c, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	chunk := []byte(strings.Repeat("x", 64<<10))
	sent := 0
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for sent < 128<<20 {
		n, err := c.Write(chunk)
		sent += n
		if err != nil {
			break
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "request too long") {
		t.Errorf("after %d bytes: reply %q", sent, line)
	}
	if sent >= 128<<20 {
		t.Errorf("the agent read all %d bytes", sent)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 8<<20 {
		t.Errorf("heap grew %d bytes for one long request", grew)
	}
	t.Logf("cut off after %d bytes sent; limit %d", sent, lim.MaxRequest)
}

// A follower that stops reading is evicted after the write timeout and the others go on.
func TestSlowFollowerEvicted(t *testing.T) {
	lim := followapi.DefaultLimits()
	lim.WriteTimeout, lim.QueueLen = 300*time.Millisecond, 64
	h := start(t, lim, eachConnAnother(), nil)
	slow, _ := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, Timeout: "1ms"}, nil)
	fast, _ := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, JSON: true, Timeout: "1ms"}, nil)
	if !slow.reply.OK || !fast.reply.OK {
		t.Fatal(slow.reply, fast.reply)
	}
	// The slow one's socket buffers fill: keep sending until it is evicted.
	var got []exporter.JourneyJSON
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			js, _ := fast.journeys(t, 1, 200*time.Millisecond)
			if len(js) == 0 && h.srv.Stats().Evicted > 0 {
				return
			}
			got = append(got, js...)
		}
	}()
	for i := 0; h.srv.Stats().Evicted == 0 && i < 200000; i++ {
		h.src.send("10.0.0.1:1000", "10.0.0.2:80", uint16(i))
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	<-done
	if h.srv.Stats().Evicted != 1 {
		t.Fatalf("the slow follower was not evicted: %+v", h.srv.Stats())
	}
	if len(got) == 0 {
		t.Errorf("the fast follower got nothing while the slow one stalled")
	}
	if !strings.Contains(h.logText(), "CN") && !strings.Contains(h.logText(), "evicted") {
		t.Errorf("no eviction in the log: %s", h.logText())
	}
	t.Logf("fast follower: %d journeys; stats %+v", len(got), h.srv.Stats())
}

// The follower is told of the events its queue lost.
func TestLostIsTold(t *testing.T) {
	lim := followapi.DefaultLimits()
	lim.QueueLen = 1
	h := start(t, lim, anyone, nil)
	c, _ := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, JSON: true, Timeout: "1ms"}, nil)
	if !c.reply.OK {
		t.Fatal(c.reply)
	}
	for i := range 300 {
		h.src.send("10.0.0.1:1000", "10.0.0.2:80", uint16(i))
	}
	js, other := c.journeys(t, 1000, time.Second)
	for _, j := range js {
		if j.Verdict == "lost" {
			t.Errorf("a journey judged lost while its follower's queue lost events: %+v", j)
		}
	}
	var total uint64
	for _, f := range other {
		if f.Kind == followapi.KindLost {
			var l followapi.Lost
			if err := json.Unmarshal(f.Data, &l); err != nil {
				t.Fatal(err)
			}
			total = l.Total
		}
	}
	if st := h.srv.Stats(); total == 0 || total != st.QueueDrops {
		t.Errorf("told %d lost, the server counted %d", total, st.QueueDrops)
	}
}

// Events the tracer lost for everyone make the journeys in flight incomplete, not lost.
func TestTracerLossMakesIncomplete(t *testing.T) {
	h := start(t, followapi.DefaultLimits(), anyone, nil)
	c, _ := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, JSON: true, Timeout: "1s"}, nil)
	if !c.reply.OK {
		t.Fatal(c.reply)
	}
	// One hop of a packet (veth1 ingress), nothing after: it would be lost.
	data := tcpPacket("10.0.0.1:1000", "10.0.0.2:80", 9)
	ev := decode.Event{TimeNs: mono(), Ifindex: 3, Kind: decode.KindHop, Dir: decode.Ingress, Filter: 0,
		Len: uint32(len(data)), Protocol: binary.NativeEndian.Uint16([]byte{8, 0})}
	ev.SnapLen = uint16(copy(ev.Data[:], data))
	h.src.events <- ev
	time.Sleep(50 * time.Millisecond)
	h.src.lost.Add(5) // the ring buffer overflowed meanwhile
	js, _ := c.journeys(t, 1, 2*time.Second)
	if len(js) != 1 || js[0].Verdict != "incomplete" || js[0].EventsLost == 0 {
		t.Fatalf("want one incomplete journey with events lost, got %+v", js)
	}
}

// TLS: only a follower with a certificate of the client CA is served; anything else
// fails the handshake and gets no byte of the protocol.
func TestTLSAuthentication(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	mk := func(sub string, validity time.Duration, at time.Time, ca string) string {
		d := filepath.Join(dir, sub)
		if err := followapi.MakeCerts(followapi.CertRequest{Dir: d, ServerName: followapi.DefaultServerName, Follower: "oncall-" + sub, Validity: validity, Now: at, CADir: ca}); err != nil {
			t.Fatal(err)
		}
		return d
	}
	good := mk("good", time.Hour, now, "")
	other := mk("other", time.Hour, now, "")                         // another CA
	expired := mk("expired", time.Hour, now.Add(-3*time.Hour), good) // the good CA's, expired two hours ago
	second := mk("second", time.Hour, now, good)                     // another follower of the good CA
	srvCfg, err := followapi.ServerTLS(followapi.TLSFiles{Cert: good + "/agent.crt", Key: good + "/agent.key", CA: good + "/ca.crt"}, false)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, followapi.DefaultLimits(), TLSClientCert, func(l net.Listener) net.Listener { return tls.NewListener(l, srvCfg) })
	dialWith := func(d, serverName string, withCert bool) func(string) (net.Conn, error) {
		return func(a string) (net.Conn, error) {
			cfg, err := followapi.ClientTLS(followapi.TLSFiles{Cert: d + "/follower.crt", Key: d + "/follower.key", CA: good + "/ca.crt"}, nil, serverName)
			if err != nil {
				return nil, err
			}
			if !withCert {
				cfg.Certificates = nil
			}
			return tls.Dial("tcp", a, cfg)
		}
	}
	c, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}}, dialWith(good, "", true))
	if err != nil || !c.reply.OK {
		t.Fatalf("good certificate: %v %+v", err, c.reply)
	}
	if !strings.Contains(h.logText(), "CN=oncall-good (tls) follows 10.0.0.2") {
		t.Errorf("log: %s", h.logText())
	}
	for _, tc := range []struct {
		name string
		dial func(string) (net.Conn, error)
	}{
		{"no certificate", dialWith(good, "", false)},
		{"another CA's certificate", dialWith(other, "", true)},
		{"expired certificate", dialWith(expired, "", true)},
		{"plaintext", func(a string) (net.Conn, error) { return net.Dial("tcp", a) }},
	} {
		c, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}}, tc.dial)
		if err == nil && c.reply.OK {
			t.Errorf("%s: served", tc.name)
		}
		if err == nil && c.reply.Node != "" {
			t.Errorf("%s: told of the node: %+v", tc.name, c.reply)
		}
	}
	// The follower checks the agent: a wrong name is refused on the client's side.
	if _, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}}, dialWith(good, "not-the-agent", true)); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Errorf("wrong server name: %v", err)
	}
	waitFor(t, func() bool { return h.srv.Stats().Refused[RefusedAuth] == 5 }, fmt.Sprintf("5 auth refusals, got %v", h.srv.Stats().Refused))
	if !strings.Contains(h.logText(), "certificate has expired") {
		t.Errorf("the expired certificate was not refused as expired:\n%s", h.logText())
	}
	// A second follower issued from the same CA is served, under its own name.
	if c, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.3"}}, dialWith(second, "", true)); err != nil || !c.reply.OK {
		t.Errorf("second follower: %v %+v", err, c.reply)
	}
	if !strings.Contains(h.logText(), "CN=oncall-second (tls) follows") {
		t.Errorf("log: %s", h.logText())
	}
}

// With Kubernetes tokens (agent --auth-kube) a follower without a certificate is
// served only when its token is reviewed and allowed; the token never reaches the log.
func TestTokenAuthentication(t *testing.T) {
	dir := t.TempDir()
	if err := followapi.MakeCerts(followapi.CertRequest{Dir: dir, ServerName: followapi.DefaultServerName, Follower: "oncall", Validity: time.Hour, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	srvCfg, err := followapi.ServerTLS(followapi.TLSFiles{Cert: dir + "/agent.crt", Key: dir + "/agent.key"}, true)
	if err != nil {
		t.Fatal(err)
	}
	tokens := func(c *Config) {
		c.TokenAuth = func(_ context.Context, tok string) (string, error) {
			if tok == "tok-alice" {
				return "alice", nil
			}
			return "", fmt.Errorf("denied: the API server does not know the token")
		}
	}
	h := start(t, followapi.DefaultLimits(), TLSClientCert, func(l net.Listener) net.Listener { return tls.NewListener(l, srvCfg) }, tokens)
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(dir + "/ca.crt")
	pool.AppendCertsFromPEM(ca)
	dial := func(a string) (net.Conn, error) {
		return tls.Dial("tcp", a, &tls.Config{RootCAs: pool, ServerName: followapi.DefaultServerName, MinVersion: tls.VersionTLS13})
	}
	for _, tc := range []struct{ token, want string }{
		{"", "unauthenticated"},
		{"tok-mallory", "unauthorized: denied"},
	} {
		c, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, Token: tc.token}, dial)
		if err != nil || c.reply.OK || !strings.Contains(c.reply.Error, tc.want) || c.reply.Node != "" {
			t.Errorf("token %q: %v %+v, want refused with %q", tc.token, err, c.reply, tc.want)
		}
	}
	c, err := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, Token: "tok-alice"}, dial)
	if err != nil || !c.reply.OK {
		t.Fatalf("alice: %v %+v", err, c.reply)
	}
	log := h.logText()
	if !strings.Contains(log, "user alice (kube) follows 10.0.0.2") || strings.Contains(log, "tok-") {
		t.Errorf("log:\n%s", log)
	}
	if n := h.srv.Stats().Refused[RefusedAuth]; n != 2 {
		t.Errorf("%d auth refusals, want 2", n)
	}
}

// A follower leaving clears its selectors in the kernel (a walk of the flows map): the
// other followers' events keep flowing meanwhile.
func TestLeavingDoesNotStallRouting(t *testing.T) {
	h := start(t, followapi.DefaultLimits(), func(_ context.Context, c net.Conn) (Identity, error) {
		return Identity{Name: c.RemoteAddr().String(), Via: "test"}, nil
	}, nil)
	h.src.mu.Lock()
	h.src.clearDelay = 2 * time.Second
	h.src.mu.Unlock()
	stay, _ := h.follow(followapi.Request{Selectors: []string{"10.0.0.2"}, JSON: true, Timeout: "20ms"}, nil)
	leave, _ := h.follow(followapi.Request{Selectors: []string{"10.0.0.3"}, JSON: true, Timeout: "20ms"}, nil)
	if !stay.reply.OK || !leave.reply.OK {
		t.Fatal(stay.reply, leave.reply)
	}
	leave.c.Close()
	time.Sleep(100 * time.Millisecond) // the leaver's release is clearing now
	start := time.Now()
	h.src.send("10.0.0.1:1000", "10.0.0.2:80", 42)
	js, _ := stay.journeys(t, 1, 5*time.Second)
	if len(js) != 1 {
		t.Fatalf("no journey while another follower left")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the journey took %v: routing waited for the leaver's clear", took)
	}
}

// A doctor request gets the agent's state and the connection ends; it takes no slot,
// and the same authentication holds: a TLS peer without certificate or token is refused.
func TestDoctorRequest(t *testing.T) {
	dir := t.TempDir()
	if err := followapi.MakeCerts(followapi.CertRequest{Dir: dir, ServerName: followapi.DefaultServerName, Follower: "oncall", Validity: time.Hour, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	srvCfg, err := followapi.ServerTLS(followapi.TLSFiles{Cert: dir + "/agent.crt", Key: dir + "/agent.key"}, true)
	if err != nil {
		t.Fatal(err)
	}
	state := func(c *Config) {
		c.Doctor = func() []string { return []string{"kernel: 5.10.0-test", "layout: flannel"} }
		c.TokenAuth = func(_ context.Context, tok string) (string, error) {
			if tok == "tok-alice" {
				return "alice", nil
			}
			return "", fmt.Errorf("denied")
		}
	}
	h := start(t, followapi.DefaultLimits(), TLSClientCert, func(l net.Listener) net.Listener { return tls.NewListener(l, srvCfg) }, state)
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(dir + "/ca.crt")
	pool.AppendCertsFromPEM(ca)
	dial := func(a string) (net.Conn, error) {
		return tls.Dial("tcp", a, &tls.Config{RootCAs: pool, ServerName: followapi.DefaultServerName, MinVersion: tls.VersionTLS13})
	}
	c, err := h.follow(followapi.Request{Doctor: true}, dial)
	if err != nil || c.reply.OK || len(c.reply.Doctor) > 0 || !strings.Contains(c.reply.Error, "unauthenticated") {
		t.Fatalf("doctor without a token: %v %+v, want refused", err, c.reply)
	}
	c, err = h.follow(followapi.Request{Doctor: true, Token: "tok-alice"}, dial)
	if err != nil || !c.reply.OK {
		t.Fatalf("doctor: %v %+v", err, c.reply)
	}
	if c.reply.Node != "node-x" || strings.Join(c.reply.Doctor, "|") != "kernel: 5.10.0-test|layout: flannel" {
		t.Errorf("doctor reply %+v", c.reply)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Errorf("after the doctor reply: %v, want the connection closed", err)
	}
	if st := h.srv.Stats(); st.Follows != 0 || h.srv.Followers() != 0 {
		t.Errorf("a doctor request counted as a follow: %+v", st)
	}
	if !strings.Contains(h.logText(), "user alice (kube) asked for the agent's state") {
		t.Errorf("log:\n%s", h.logText())
	}
}
