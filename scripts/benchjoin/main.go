// Command benchjoin measures `pathtrace follow --agents` joining many nodes: it runs N
// fake agents (the real follow server, package followsrv, fed by followtest's fake
// event source instead of a kernel) on unix sockets, starts the pathtrace binary as
// their follower, and has every agent's packets cross to the next nodes at a given
// rate: each packet is a pod's SYN leaving one node by eth0 and delivered to a pod on
// another. It prints, against their targets (package stat): paths joined per second,
// paths lost, the follower's CPU and peak memory, and the time from a packet's last
// hop to its printed path. It exits 1 when it could not measure.
//
//	go run ./scripts/benchjoin -pathtrace bin/pathtrace [-nodes 100] [-rate 2000] [-seconds 10]
//
// No root: nothing touches the kernel.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter/followapi"
	"github.com/pathtrace/pathtrace/exporter/followsrv"
	"github.com/pathtrace/pathtrace/exporter/followsrv/followtest"
	"github.com/pathtrace/pathtrace/scripts/benchscale/stat"
)

type config struct {
	bin     string
	nodes   int
	rate    int
	seconds float64
	timeout time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.bin, "pathtrace", "bin/pathtrace", "the pathtrace binary whose follow joins")
	flag.IntVar(&c.nodes, "nodes", 100, "fake agents, one per node")
	flag.IntVar(&c.rate, "rate", 2000, "packets per second crossing between nodes (each one path of two legs)")
	flag.Float64Var(&c.seconds, "seconds", 10, "seconds of traffic")
	flag.DurationVar(&c.timeout, "timeout", 500*time.Millisecond, "follow --timeout")
	flag.Parse()
	if c.nodes < 2 || c.rate < 1 || c.seconds <= 0 {
		fmt.Fprintln(os.Stderr, "benchjoin: want -nodes ≥ 2, -rate ≥ 1, -seconds > 0")
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "benchjoin:", err)
		os.Exit(1)
	}
}

type node struct {
	name string
	src  *followtest.Source
	sock string
	pods netip.Prefix
	addr netip.Addr
}

var (
	veth = decode.Iface{Index: 3, Name: "veth0", Kind: decode.KindPod}
	eth0 = decode.Iface{Index: 2, Name: "eth0", Kind: decode.KindUplink}
)

// startAgents runs one follow server per node until ctx ends.
func startAgents(ctx context.Context, dir string, n int, wg *sync.WaitGroup) ([]*node, error) {
	var out []*node
	for i := range n {
		nd := &node{name: fmt.Sprintf("node-%03d", i), sock: filepath.Join(dir, fmt.Sprintf("a%d.sock", i)),
			pods: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(244 + i/256), byte(i % 256), 0}), 24),
			addr: netip.AddrFrom4([4]byte{192, 168, byte(i / 250), byte(i%250 + 1)})}
		nd.src = followtest.New(followsrv.View{Mode: "fake", Ifaces: []decode.Iface{veth, eth0},
			Local: []netip.Addr{nd.addr}, Pods: []netip.Prefix{nd.pods}})
		l, err := net.Listen("unix", nd.sock)
		if err != nil {
			return nil, err
		}
		srv := followsrv.New(nd.src, followsrv.Config{Node: nd.name, BootID: "boot-1", Limits: followapi.DefaultLimits(), Slots: 8, Now: nd.src.Now})
		wg.Add(2)
		go func() {
			defer wg.Done()
			srv.Serve(ctx, l, followsrv.UnixPeer)
		}()
		go func() {
			defer wg.Done()
			srv.Route(ctx)
		}()
		go func() {
			<-ctx.Done()
			l.Close()
			srv.Shutdown(func() error { return nil })
		}()
		out = append(out, nd)
	}
	return out, nil
}

type sent struct {
	at   time.Time
	seen bool
}

func run(c config) error {
	if _, err := os.Stat(c.bin); err != nil {
		return fmt.Errorf("-pathtrace %s: %w (make build)", c.bin, err)
	}
	dir, err := os.MkdirTemp("", "benchjoin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	nodes, err := startAgents(ctx, dir, c.nodes, &wg)
	if err != nil {
		return err
	}

	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, "unix:"+n.sock)
	}
	cmd := exec.Command(c.bin, "follow", "--agents", strings.Join(addrs, ","), "--json", "--timeout", c.timeout.String(), ":8080")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	var (
		mu        sync.Mutex
		packets   = map[string]*sent{} // by the flow's source
		latencies []float64
		paths     int
		partial   int
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			now := time.Now()
			var p struct {
				Kind string
				Flow struct{ Src string }
				Legs []json.RawMessage
			}
			if json.Unmarshal(sc.Bytes(), &p) != nil || p.Kind != "path" {
				continue
			}
			mu.Lock()
			if s := packets[p.Flow.Src]; s != nil && !s.seen {
				s.seen = true
				if len(p.Legs) == 2 {
					paths++
					latencies = append(latencies, float64(now.Sub(s.at).Microseconds())/1000)
				} else {
					partial++
				}
			}
			mu.Unlock()
		}
	}()
	go func() {
		<-readDone
		exited <- cmd.Wait()
	}()

	// Every agent has the follower's selector before traffic starts.
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		for n.src.Selectors() == 0 {
			select {
			case err := <-exited:
				return fmt.Errorf("follow exited before it followed every agent: %v\n%s", err, stderr.String())
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				return fmt.Errorf("follow did not follow all %d agents in 30 s:\n%s", c.nodes, stderr.String())
			}
		}
	}

	total := int(float64(c.rate) * c.seconds)
	cpu0 := procCPU(cmd.Process.Pid)
	start := time.Now()
	for k := range total {
		if d := time.Until(start.Add(time.Duration(float64(k) / float64(c.rate) * float64(time.Second)))); d > 0 {
			time.Sleep(d)
		}
		x := nodes[k%c.nodes]
		y := nodes[(k%c.nodes+1+(k/c.nodes)%(c.nodes-1))%c.nodes]
		src := netip.AddrPortFrom(podAddr(x.pods, k), uint16(1024+k%60000))
		dst := netip.AddrPortFrom(podAddr(y.pods, k+7), 8080)
		id := uint16(k)
		mu.Lock()
		packets[src.String()] = &sent{}
		mu.Unlock()
		x.src.Send(src.String(), dst.String(), id,
			followtest.Hop{Ifindex: uint32(veth.Index), Name: veth.Name, Dir: decode.Ingress},
			followtest.Hop{Ifindex: uint32(eth0.Index), Name: eth0.Name, Dir: decode.Egress})
		y.src.Send(src.String(), dst.String(), id,
			followtest.Hop{Ifindex: uint32(eth0.Index), Name: eth0.Name, Dir: decode.Ingress},
			followtest.Hop{Ifindex: uint32(veth.Index), Name: veth.Name, Dir: decode.Egress})
		at := time.Now()
		mu.Lock()
		packets[src.String()].at = at
		mu.Unlock()
	}
	sendSecs := time.Since(start).Seconds()
	offered := float64(total) / sendSecs
	// The last paths: the journeys' timeout, the join's wait, and some.
	time.Sleep(c.timeout*3 + time.Second)
	elapsed := time.Since(start)
	cpu := procCPU(cmd.Process.Pid) - cpu0
	hwm, _ := vmHWM(cmd.Process.Pid)
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		return errors.New("follow did not exit 10 s after SIGINT")
	}
	mu.Lock()
	defer mu.Unlock()
	lost := total - paths - partial
	fmt.Printf("benchjoin: %s follow --agents (%d fake agents), %d packets across nodes offered at %.0f/s\n", c.bin, c.nodes, total, offered)
	figs := []stat.Figure{
		{Name: "paths joined per second", Unit: "/s", Samples: []float64{float64(paths) / sendSecs},
			Target: stat.AtLeast(0.99 * offered), Note: "two legs each, over the seconds of traffic"},
		{Name: "paths not joined (one leg or none)", Unit: "", Samples: []float64{float64(partial + lost)}, Target: stat.AtMost(0),
			Note: fmt.Sprintf("%d with one leg, %d never printed", partial, lost)},
		{Name: "follower CPU", Unit: "% of a core", Samples: []float64{100 * cpu.Seconds() / elapsed.Seconds()}},
		{Name: "follower peak memory (VmHWM)", Unit: "MiB", Samples: []float64{hwm}},
		{Name: "last hop to printed path, median", Unit: "ms", Samples: []float64{stat.Median(latencies)},
			Target: stat.AtMost(float64(c.timeout.Milliseconds()) + 100), Note: fmt.Sprintf("--timeout %v", c.timeout)},
		{Name: "last hop to printed path, p99", Unit: "ms", Samples: []float64{stat.Quantile(latencies, 0.99)},
			Target: stat.AtMost(float64(c.timeout.Milliseconds()) + 100)},
	}
	if paths == 0 {
		figs[4].Samples, figs[5].Samples = nil, nil
		fmt.Fprintf(os.Stderr, "benchjoin: no path joined; follow said:\n%s\n", stderr.String())
	}
	missed, err := stat.Table(os.Stdout, figs)
	if err != nil {
		return err
	}
	fmt.Printf("benchjoin: %d of %d figures miss their targets\n", missed, len(figs))
	return nil
}

// podAddr is a pod's address in p, by k.
func podAddr(p netip.Prefix, k int) netip.Addr {
	b := p.Addr().As4()
	b[3] = byte(2 + k%250)
	return netip.AddrFrom4(b)
}

// procCPU is the process's user and system time so far.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// After the command's name in parentheses: fields 14 and 15 (utime, stime) in ticks.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func vmHWM(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return stat.StatusMiB(data, "VmHWM")
}
