package followcli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/followapi"
	"github.com/pathtrace/pathtrace/exporter/followsrv"
	"github.com/pathtrace/pathtrace/exporter/followsrv/followtest"
)

// agent runs a follow server for node on a unix socket, fed by a fake source.
func agent(t *testing.T, node string, v followsrv.View) (*followtest.Source, Addr) {
	t.Helper()
	src := followtest.New(v)
	sock := filepath.Join(t.TempDir(), node+".sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := followsrv.New(src, followsrv.Config{Node: node, BootID: "boot-1", Limits: followapi.DefaultLimits(), Slots: 8, Now: src.Now})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); srv.Serve(ctx, l, followsrv.UnixPeer) }()
	go func() { defer wg.Done(); srv.Route(ctx) }()
	t.Cleanup(func() {
		cancel()
		l.Close()
		srv.Shutdown(func() error { return nil })
		wg.Wait()
	})
	return src, Addr{Network: "unix", Addr: sock}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var (
	vethA = followtest.Hop{Ifindex: 3, Name: "veth1a", Dir: decode.Ingress}
	eth0A = followtest.Hop{Ifindex: 2, Name: "eth0", Dir: decode.Egress}
	eth0B = followtest.Hop{Ifindex: 2, Name: "eth0", Dir: decode.Ingress}
	vethB = followtest.Hop{Ifindex: 4, Name: "veth2b", Dir: decode.Egress}
)

func viewA() followsrv.View {
	return followsrv.View{Mode: "fake", Ifaces: []decode.Iface{{Index: 3, Name: "veth1a", Kind: decode.KindPod}, {Index: 2, Name: "eth0", Kind: decode.KindUplink}},
		Local: []netip.Addr{netip.MustParseAddr("192.168.0.1")}, Pods: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}
}

func viewB() followsrv.View {
	return followsrv.View{Mode: "fake", Ifaces: []decode.Iface{{Index: 4, Name: "veth2b", Kind: decode.KindPod}, {Index: 2, Name: "eth0", Kind: decode.KindUplink}},
		Local: []netip.Addr{netip.MustParseAddr("192.168.0.2")}, Pods: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}}
}

// One agent: journeys copied as they come, counted by frame, up to the count.
func TestCopy(t *testing.T) {
	src, addr := agent(t, "node-a", viewA())
	c, err := Dial(addr, followapi.Request{Selectors: []string{"10.244.2.57"}, JSON: true, Timeout: "500ms"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Reply.Node != "node-a" || c.NodeInfo().Name != "node-a" || len(c.NodeInfo().Pods) != 1 {
		t.Errorf("reply %+v node info %+v", c.Reply, c.NodeInfo())
	}
	for i := range 5 {
		src.Send("10.244.1.23:40000", "10.244.2.57:8080", uint16(100+i), vethA, eth0A)
	}
	var out lockedBuf
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := Copy(ctx, cancel, c, 3, &out, Sink{Warn: &out, Notice: func(*Conn, followapi.Frame) {}})
	if err != nil || n != 3 {
		t.Fatalf("Copy: %d journeys, %v", n, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 JSON lines, got:\n%s", out.String())
	}
	var j exporter.JourneyJSON
	if err := json.Unmarshal([]byte(lines[0]), &j); err != nil || j.Node != "node-a" || len(j.Hops) != 2 {
		t.Errorf("journey %s: %v", lines[0], err)
	}
}

// Two agents: the packet's journeys on both nodes are one path, node-a then node-b.
func TestJoin(t *testing.T) {
	srcA, addrA := agent(t, "node-a", viewA())
	srcB, addrB := agent(t, "node-b", viewB())
	req := followapi.Request{Selectors: []string{"10.244.2.57"}, JSON: true, Timeout: "500ms"}
	var conns []*Conn
	for _, a := range []Addr{addrA, addrB} {
		c, err := Dial(a, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	srcA.Send("10.244.1.23:40000", "10.244.2.57:8080", 7, vethA, eth0A)
	srcB.Send("10.244.1.23:40000", "10.244.2.57:8080", 7, eth0B, vethB)
	var out lockedBuf
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, st, err := Join(ctx, cancel, conns, JoinConfig{Count: 1, Wait: 500 * time.Millisecond, JSON: true}, &out, Sink{Warn: &out, Notice: func(*Conn, followapi.Frame) {}})
	if err != nil || n != 1 {
		t.Fatalf("Join: %d paths, %v\n%s", n, err, out.String())
	}
	var p exporter.PathJSON
	if err := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &p); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	if strings.Join(p.Nodes, ",") != "node-a,node-b" || len(p.Legs) != 2 || st.Legs != 2 {
		t.Errorf("path %+v, stats %+v", p, st)
	}
}

// What an agent sends beyond its bounds ends the stream, not the client.
func TestBoundedStream(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "evil.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		c.Read(buf)
		c.Write([]byte(`{"version":1,"ok":true,"node":"evil"}` + "\n"))
		c.Write([]byte("journey 99999999999\n"))
		time.Sleep(time.Second)
	}()
	c, err := Dial(Addr{Network: "unix", Addr: l.Addr().String()}, followapi.Request{Selectors: []string{"1.2.3.4"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuf
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, _ := Copy(ctx, cancel, c, 0, &out, Sink{Warn: &out, Notice: func(*Conn, followapi.Frame) {}})
	if n != 0 || !strings.Contains(out.String(), "more than the") {
		t.Errorf("an oversized frame: %d journeys, output %q", n, out.String())
	}
}
