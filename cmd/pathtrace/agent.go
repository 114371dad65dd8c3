package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/tracer"
)

// DefaultAgentSocket is where follow looks for an agent when none is named.
const DefaultAgentSocket = "/run/pathtrace/agent.sock"

type agentOpts struct {
	node        string
	netns       string
	ifaces      []string
	attachMode  string
	dropHook    string
	nfHook      string
	metricsAddr string
	api         []string
	sample      uint32
	dropRate    uint32
	readyFile   string
	queue       int
	kernelBTF   string
	capture     captureOpts
	kube        kubeOpts
	namer       decode.Namer // from the resolver; nil: names off
	podNames    int          // --metrics-pod-names: series budget of pathtrace_pod_drops_total; 0: off
	podDrops    *exporter.PodDrops
}

func agentFlags() (*pflag.FlagSet, *agentOpts) {
	o := &agentOpts{}
	host, _ := os.Hostname()
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9965", "serve /metrics, /healthz and /readyz here (host:port; \"\" for none)")
	fs.StringSliceVar(&o.api, "api", []string{"unix:" + DefaultAgentSocket}, "serve follow clients here: unix:PATH, or tcp:HOST:PORT (no authentication: packet data for anyone who can connect); repeat for several; \"\" for none")
	fs.Uint32Var(&o.sample, "sample", 64, "measure hop latency on 1 packet in N (1: every packet, 0: off); the default is what make bench shows costs little over none")
	fs.Uint32Var(&o.dropRate, "drop-rate", 1000, "drop events per second per CPU sent to user space beyond followed flows (the excess is counted, every drop is in the metrics)")
	fs.StringVar(&o.node, "node", host, "name of this node")
	addKubeFlags(fs, &o.kube)
	fs.BoolVar(&o.kube.nodePods, "names-node-pods", false, "watch only this node's pods (field selector spec.nodeName=--node), for clusters too large for every agent to hold every pod; pods elsewhere are then named only when a Service's endpoints point at them")
	fs.IntVar(&o.podNames, "metrics-pod-names", 0, "with Kubernetes names: count drop events per pod in pathtrace_pod_drops_total{namespace,pod,end,reason}, at most this many series (the rest under pod=\"_other_\"); 0: off, no pod in any label")
	fs.StringSliceVar(&o.ifaces, "ifaces", tracer.DefaultIfaces, "interfaces to trace, glob patterns; new matching interfaces are attached as they appear")
	fs.StringVar(&o.attachMode, "attach-mode", tracer.AttachAuto, "tc attachment: auto, tcx or clsact")
	fs.StringVar(&o.dropHook, "drop-hook", tracer.DropAuto, "kfree_skb hook: auto, tp_btf, raw_tp, raw_tp_noreason or none")
	fs.StringVar(&o.nfHook, "nf-hook", tracer.NFAuto, "netfilter hooks for followed flows: auto, link, kprobe or none")
	fs.StringVar(&o.netns, "netns", "", "trace in this network namespace (name under /run/netns, or a path)")
	fs.StringVar(&o.readyFile, "ready-file", "", "write this file once attached and serving")
	fs.IntVar(&o.queue, "queue", 16384, "events buffered between the kernel and the decoder")
	kernelBTFFlag(fs, &o.kernelBTF)
	o.capture.flags(fs)
	return fs, o
}

// agent is the always-on node agent: in-kernel counters exposed to Prometheus, and
// follow clients served through its API.
type agent struct {
	o       *agentOpts
	tr      *tracer.Tracer
	mu      sync.Mutex                           // tracer changes, slots
	closed  bool                                 // the tracer is closed
	slots   [tracer.MaxSelectors]*client         // the follower owning each selector slot (one may own several)
	slotSel [tracer.MaxSelectors]decode.Selector // each slot's selector
	ready   atomic.Bool
	stderr  io.Writer
	flagged flagCounter
	qdrops  atomic.Uint64 // events a follower's queue could not take
	capture *capture      // nil without --pcap-dir
	// notesShown: the tracer's notes printed so far (more come as interfaces do).
	notesShown int
}

func runAgent(args []string, stdout, stderr io.Writer) error {
	fs, o := agentFlags()
	if err := parseFlags(fs, args, "pathtrace agent [flags]", stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("agent takes no arguments, got %q", fs.Args())}
	}
	if err := o.capture.validate(); err != nil {
		return usageError{err}
	}
	if err := o.kube.check(); err != nil {
		return usageError{err}
	}
	if o.podNames < 0 || o.podNames > 100000 {
		return usageError{fmt.Errorf("--metrics-pod-names %d: want 0..100000", o.podNames)}
	}
	a := &agent{o: o, stderr: stderr}
	if o.capture.dir != "" {
		// Before anything is attached: a directory that cannot be written is an error
		// with nothing to undo.
		var err error
		if a.capture, err = newCapture(&o.capture, stderr); err != nil {
			return err
		}
	}

	// Listen before attaching anything: a taken address is an error with nothing to undo.
	var mln net.Listener
	if o.metricsAddr != "" {
		var err error
		if mln, err = net.Listen("tcp", o.metricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr %s: %w", o.metricsAddr, err)
		}
		defer mln.Close()
	}
	var alns []net.Listener
	for _, api := range o.api {
		if api == "" {
			continue
		}
		l, err := listenAPI(api)
		if err != nil {
			return err
		}
		defer l.Close()
		if path, ok := strings.CutPrefix(api, "unix:"); ok {
			defer os.Remove(path)
		}
		alns = append(alns, l)
	}
	if o.readyFile != "" {
		if err := checkWritable(o.readyFile); err != nil {
			return err
		}
		// One a killed agent left must not say this one is ready before it is.
		os.Remove(o.readyFile)
	}

	ctx, stop := signalContext()
	defer stop()
	// Names come in the background: the agent traces from the start, with or
	// without the API server.
	res, err := startNames(ctx, &o.kube, o.node, "pathtrace agent", stderr, false)
	if err != nil {
		return err
	}
	o.namer = namerOf(res)
	if o.podNames > 0 {
		if res == nil {
			fmt.Fprintf(stderr, "pathtrace agent: --metrics-pod-names needs Kubernetes names, which are off: no pod drop series\n")
		} else {
			o.podDrops = exporter.NewPodDrops(o.podNames)
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "attaching", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	var srv *http.Server
	if mln != nil {
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(mln)
		defer srv.Close()
	}

	tr, err := tracer.New(tracer.Config{
		Netns: o.netns, Ifaces: o.ifaces, AttachMode: o.attachMode, DropHook: o.dropHook, NFHook: o.nfHook,
		QueueLen: o.queue, Agent: true, Sample: o.sample, DropRate: o.dropRate, SnapLen: snapLen(o),
		BTFPath: o.kernelBTF,
	})
	if err != nil {
		return err
	}
	a.tr = tr
	defer tr.Close()
	if mln != nil {
		metrics := exporter.NewMetrics(a, exporter.BuildInfo{Version: version, Kernel: kernelRelease(), AttachMode: tr.Mode().TC})
		if o.podDrops != nil {
			metrics.Registry().MustRegister(o.podDrops)
		}
		mux.Handle("/metrics", metrics.Handler())
	}
	// Nobody follows yet: the netfilter hooks wait for the first follower.
	if err := tr.SetNetfilter(false); err != nil {
		return err
	}
	a.ready.Store(true)
	// Loading the kernel's BTF and the programs leaves ~15 MB of garbage behind; hand
	// it back to the kernel now rather than as the runtime's scavenger gets to it, so
	// the resident size is what the agent uses.
	debug.FreeOSMemory()
	names := []string{}
	for _, i := range tr.Ifaces() {
		names = append(names, i.Name+"("+i.Kind.String()+")")
	}
	fmt.Fprintf(stderr, "pathtrace agent: node %s: %s on %d interfaces: %s; metrics on %s, API on %s\n",
		o.node, tr.Mode(), len(names), strings.Join(names, " "), o.metricsAddr, strings.Join(o.api, ","))
	for _, n := range tr.Mode().Notes {
		fmt.Fprintf(stderr, "pathtrace agent: note: %s\n", n)
	}
	a.mu.Lock()
	a.notesShown = len(tr.Mode().Notes)
	a.mu.Unlock()
	var capDone chan struct{}
	if a.capture != nil {
		if err := a.startCapture(); err != nil {
			return err
		}
		capDone = make(chan struct{})
		syms, _ := tracer.LoadSymbols()
		asm := decode.NewAssembler(decode.Config{Node: o.node, Timeout: o.capture.timeout, Stall: o.capture.stall,
			Ifaces: tr.Ifaces(), LocalAddrs: tr.LocalAddrs(), Reasons: tr.Reasons(), Symbols: syms, KeepBytes: true})
		go func() {
			defer close(capDone)
			a.capture.run(ctx, asm, &a.flagged, a.ifaces)
		}()
		fmt.Fprintf(stderr, "pathtrace agent: capturing flagged flows to %s (history %d packets / %v per flow, %d bytes in all)\n",
			o.capture.dir, o.capture.pre, o.capture.preAge, o.capture.historyBytes)
	}
	for _, aln := range alns {
		go a.serveAPI(ctx, aln)
	}
	go a.watchLinks(ctx)
	if o.readyFile != "" {
		if err := writeReady(o.readyFile, tr); err != nil {
			return err
		}
		defer os.Remove(o.readyFile)
	}
	a.route(ctx)
	// Detach first; the followers then see their queues close.
	a.mu.Lock()
	a.closed = true
	cerr := tr.Close()
	for i, f := range a.slots {
		if f != nil {
			if f.conn != nil {
				f.conn.Close()
			}
			a.slots[i] = nil
		}
	}
	a.mu.Unlock()
	if capDone != nil {
		<-capDone // the open capture files are complete
	}
	fmt.Fprintf(stderr, "pathtrace agent: stopped, everything detached\n")
	return cerr
}

// snapLen is the bytes the kernel copies of each packet: what the capture keeps, or all
// it can for followers.
func snapLen(o *agentOpts) int {
	if o.capture.dir != "" {
		return o.capture.snaplen
	}
	return decode.SnapMax
}

// listenAPI listens where --api says: unix:PATH or tcp:HOST:PORT.
func listenAPI(api string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(api, "unix:"); ok && path != "" {
		return listenUnix(path)
	}
	if addr, ok := strings.CutPrefix(api, "tcp:"); ok && addr != "" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, usageError{fmt.Errorf("--api %q: want tcp:HOST:PORT: %v", api, err)}
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("--api %s: %w", api, err)
		}
		return l, nil
	}
	return nil, usageError{fmt.Errorf("--api %q: want unix:PATH or tcp:HOST:PORT", api)}
}

// listenUnix listens on a unix socket, taking over a stale one a crashed agent left.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("--api: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("--api unix:%s: another agent is serving there", path)
	}
	os.Remove(path) // stale: nobody answers
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("--api unix:%s: %w", path, err)
	}
	os.Chmod(path, 0o600)
	return l, nil
}

// bootID is the running kernel's boot ID: two agents that report the same one run on
// one kernel and read one clock.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// watchLinks follows the namespace's interfaces: pods come and go. If the kernel ends
// the subscription (a full socket buffer under churn), it subscribes again and looks
// at everything afresh.
func (a *agent) watchLinks(ctx context.Context) {
	for ctx.Err() == nil {
		a.subscribeLinks(ctx)
		if ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			a.refresh()
		}
	}
}

func (a *agent) subscribeLinks(ctx context.Context) {
	updates := make(chan netlink.LinkUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		if ctx.Err() == nil {
			fmt.Fprintf(a.stderr, "pathtrace agent: link updates: %v (subscribing again)\n", err)
		}
	}}
	if a.o.netns != "" {
		path := a.o.netns
		if !strings.Contains(path, "/") {
			path = filepath.Join("/run/netns", path)
		}
		h, err := netns.GetFromPath(path)
		if err != nil {
			fmt.Fprintf(a.stderr, "pathtrace agent: cannot watch interfaces of %s: %v\n", path, err)
			return
		}
		defer h.Close()
		opts.Namespace = &h
	}
	if err := netlink.LinkSubscribeWithOptions(updates, done, opts); err != nil {
		fmt.Fprintf(a.stderr, "pathtrace agent: cannot watch interfaces: %v\n", err)
		return
	}
	var debounce, settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-updates:
			if !ok {
				return
			}
			if debounce == nil {
				debounce = time.After(100 * time.Millisecond)
			}
		case <-debounce:
			debounce = nil
			a.refresh()
			settle = time.After(2 * time.Second)
		case <-settle:
			// Pods came and went: attaching and detaching left garbage; hand it back
			// once the churn settles, so the resident size stays what the agent uses.
			settle = nil
			debug.FreeOSMemory()
		}
	}
}

func (a *agent) refresh() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	added, removed, err := a.tr.Refresh()
	notes := a.tr.Mode().Notes
	fresh := notes[min(a.notesShown, len(notes)):]
	a.notesShown = len(notes)
	a.mu.Unlock()
	for _, n := range fresh {
		fmt.Fprintf(a.stderr, "pathtrace agent: note: %s\n", n)
	}
	if len(added) > 0 {
		fmt.Fprintf(a.stderr, "pathtrace agent: attached to %s\n", strings.Join(added, " "))
	}
	if len(removed) > 0 {
		fmt.Fprintf(a.stderr, "pathtrace agent: %s gone\n", strings.Join(removed, " "))
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "pathtrace agent: %v\n", err)
	}
}

// route hands each event to the follower whose selector caught it; drops nobody
// follows flag their flow.
func (a *agent) route(ctx context.Context) {
	var p decode.Packet
	reasons := a.tr.Reasons()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-a.tr.Events():
			if !ok {
				return
			}
			if ev.Kind == decode.KindRetrans {
				if f, ok := ev.CTOrig.Flow(); ok {
					a.flagged.flag("retransmit", f)
				}
				if a.capture != nil {
					select {
					case a.capture.events <- ev:
					default:
						a.qdrops.Add(1)
					}
				}
				continue
			}
			if ev.Filter == decode.FilterUnfollowed {
				if decode.ParsePacket(ev.Packet(), ev.L2, decode.DefaultVXLANPorts, &p) == nil {
					a.flagged.flag("drop", p.Flow)
					if a.o.podDrops != nil {
						a.o.podDrops.Add(decode.NameFlow(a.o.namer, p.Flow), reasons[ev.Reason])
					}
				}
				continue
			}
			a.mu.Lock()
			slots, slotSel := a.slots, a.slotSel
			a.mu.Unlock()
			if int(ev.Filter) >= len(slots) {
				continue
			}
			// The kernel names the first selector that matches; its follower, and
			// followers with the same selector, get all it gets (NAT included), those
			// whose selectors overlap it the packets that match them. A follower of
			// several slots gets each packet once.
			parsed := false
			owner, ownerSel := slots[ev.Filter], slotSel[ev.Filter]
			var seen [tracer.MaxSelectors]*client
			for i, f := range slots {
				if f == nil || slices.Contains(seen[:], f) {
					continue
				}
				seen[i] = f
				if f != owner && (owner == nil || !slices.Contains(f.sels, ownerSel)) {
					if !parsed {
						parsed = true
						if decode.ParsePacket(ev.Packet(), ev.L2, decode.DefaultVXLANPorts, &p) != nil {
							p = decode.Packet{}
						}
					}
					if !f.wants(&p) {
						continue
					}
				}
				select {
				case f.events <- ev:
				default:
					a.qdrops.Add(1)
				}
			}
		}
	}
}

// Counters, Lost and Flagged make the agent a metrics source.
func (a *agent) Counters() (tracer.Counters, error) { return a.tr.Counters() }

func (a *agent) Lost() map[string]uint64 {
	s := a.tr.Stats()
	out := map[string]uint64{"ringbuf": 0, "ratelimit": 0, "map": 0, "queue": s.QueueDrops + a.qdrops.Load()}
	for slot, per := range s.KernelLost {
		var n uint64
		for _, v := range per {
			n += v
		}
		switch slot {
		case 0, 1, 2:
			out["ringbuf"] += n
		case 3:
			out["ratelimit"] += n
		case 4:
			out["map"] += n
		}
	}
	return out
}

func (a *agent) Flagged() map[string]uint64 { return a.flagged.counts() }

// flagCounter counts flows flagged per trigger, each flow once per trigger while it
// is remembered (a bounded set: the oldest are forgotten first).
type flagCounter struct {
	mu    sync.Mutex
	seen  map[flagKey]bool
	order []flagKey
	n     map[string]uint64
}

type flagKey struct {
	trigger string
	flow    decode.Flow
}

const flagMemory = 65536

func (c *flagCounter) flag(trigger string, f decode.Flow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen, c.n = map[flagKey]bool{}, map[string]uint64{"drop": 0, "stall": 0, "lost": 0, "retransmit": 0}
	}
	k := flagKey{trigger, f}
	if c.seen[k] {
		return
	}
	if len(c.order) >= flagMemory {
		delete(c.seen, c.order[0])
		c.order = c.order[1:]
	}
	c.seen[k] = true
	c.order = append(c.order, k)
	c.n[trigger]++
}

func (c *flagCounter) counts() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]uint64{"drop": 0, "stall": 0, "lost": 0, "retransmit": 0}
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// followRequest is what a follow client asks the agent for, as one JSON line.
type followRequest struct {
	Selectors []string `json:"selectors"`
	Proto     string   `json:"proto"`
	JSON      bool     `json:"json"`
	Timeout   string   `json:"timeout"`
	Stall     string   `json:"stall"`
	Oneway    string   `json:"oneway"`
	Count     int      `json:"count"`
	// Pcap: send the journeys' packets as pcapng too, in frames between the journeys
	// ("#pcapng N\n" and N bytes: whole blocks of one pcapng section).
	Pcap    bool `json:"pcap,omitempty"`
	SnapLen int  `json:"snaplen,omitempty"`
}

// followReply is the agent's first line back: ok, or why not.
type followReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Node  string `json:"node,omitempty"`
	Mode  string `json:"mode,omitempty"`
	// What a client joining several nodes' journeys needs to know of this one: its
	// kernel's boot ID (equal boot IDs share a clock), its addresses and its pods'
	// prefixes (where a packet it forwards goes to).
	BootID string   `json:"boot_id,omitempty"`
	Addrs  []string `json:"addrs,omitempty"`
	Pods   []string `json:"pods,omitempty"`
	// Where the selector's pod is on this node: "10.244.1.23 is the pod behind veth1a23".
	Where []string `json:"where,omitempty"`
}

type client struct {
	conn   net.Conn
	events chan decode.Event
	sels   []decode.Selector
}

// wants reports whether one of the follower's selectors matches the packet as the
// kernel's do: the flow either way round, or the underlay addresses of a VXLAN packet.
func (c *client) wants(p *decode.Packet) bool {
	if !p.Flow.Src.IsValid() {
		return false
	}
	for _, s := range c.sels {
		if s.Matches(p.Flow) {
			return true
		}
		if p.Outer != nil && s.Addr.IsValid() && s.Port == 0 && (s.Proto == 0 || s.Proto == decode.ProtoUDP) &&
			(p.Outer.Src == s.Addr || p.Outer.Dst == s.Addr) {
			return true
		}
	}
	return false
}

func (a *agent) serveAPI(ctx context.Context, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go a.serveFollower(ctx, c)
	}
}

func (a *agent) serveFollower(ctx context.Context, c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	reply := func(r followReply) { json.NewEncoder(c).Encode(r) }
	var req followRequest
	if err := json.Unmarshal(line, &req); err != nil {
		reply(followReply{Error: "bad request: " + err.Error()})
		return
	}
	sels, timeout, stall, oneway, err := parseFollowRequest(req)
	if err != nil {
		reply(followReply{Error: err.Error()})
		return
	}
	if len(sels) == 0 {
		reply(followReply{Error: "no selector"})
		return
	}
	f := &client{conn: c, events: make(chan decode.Event, 4096), sels: sels}
	a.mu.Lock()
	// One selector slot of the kernel's per selector.
	var mine []int
	for i, s := range a.slots {
		if s == nil && len(mine) < len(sels) {
			mine = append(mine, i)
		}
	}
	if len(mine) < len(sels) {
		a.mu.Unlock()
		reply(followReply{Error: fmt.Sprintf("the agent has %d selector slots free (of %d, shared by its followers), this follow needs %d; try again later", len(mine), tracer.MaxSelectors, len(sels))})
		return
	}
	for k, slot := range mine {
		a.slots[slot], a.slotSel[slot] = f, sels[k]
		if err == nil {
			err = a.tr.SetSelector(slot, &sels[k], a.usedSlots())
		}
	}
	if err == nil {
		err = a.tr.SetNetfilter(true) // the hooks serve followers only
	}
	ifaces, local, reasons := a.tr.Ifaces(), a.tr.LocalAddrs(), a.tr.Reasons()
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		for _, slot := range mine {
			a.slots[slot], a.slotSel[slot] = nil, decode.Selector{}
		}
		if !a.closed {
			for _, slot := range mine {
				a.tr.SetSelector(slot, nil, a.usedSlots())
			}
			if a.followers() == 0 {
				a.tr.SetNetfilter(false)
			}
		}
		a.mu.Unlock()
	}()
	if err != nil {
		reply(followReply{Error: err.Error()})
		return
	}

	syms, _ := tracer.LoadSymbols()
	asm := decode.NewAssembler(decode.Config{Node: a.o.node, Timeout: timeout, Stall: stall,
		Ifaces: ifaces, LocalAddrs: local, Reasons: reasons, Symbols: syms, KeepBytes: req.Pcap})
	clock := exporter.Clock{OffsetNs: time.Now().UnixNano() - int64(monoNow())}
	text := exporter.NewText(c)
	text.SetNamer(a.o.namer)
	var out exporter.Writer = text
	if req.JSON {
		js := exporter.NewJSON(c, clock)
		js.SetNamer(a.o.namer)
		out = js
	}
	if req.Pcap {
		out = &framedPcap{out: out, pcap: exporter.NewPcap(pcapFrames{c}, exporter.PcapConfig{Clock: clock,
			SnapLen: req.SnapLen, Comment: "pathtrace follow " + strings.Join(req.Selectors, " ") + " through the agent of node " + a.o.node})}
	}
	r := &runner{asm: asm, out: &flagWriter{Writer: out, flagged: &a.flagged}, limit: req.Count}
	if nf := a.tr.Mode().NF; nf == tracer.NFLink || nf == tracer.NFKprobe {
		// As standalone: the rule behind a netfilter drop, from the node's ruleset.
		r.expl = newExplainer(a.o.netns, a.tr, a.stderr)
		defer r.expl.close()
	}
	// Ready only now: the rule counters are read before the follower's first packet.
	ok := followReply{OK: true, Node: a.o.node, Mode: a.tr.Mode().String(), BootID: bootID()}
	for _, ad := range local {
		ok.Addrs = append(ok.Addrs, ad.String())
	}
	for _, p := range a.tr.PodPrefixes() {
		ok.Pods = append(ok.Pods, p.String())
	}
	ok.Where = podsBehind(a.tr, sels)
	reply(ok)
	if oneway > 0 {
		r.watch = decode.NewFlowWatch(oneway)
	}
	// The client going away ends the follow: a read returns when it closes.
	gone := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(gone) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-gone:
			return
		case ev := <-f.events:
			err = r.emit(asm.Add(&ev))
		case <-tick.C:
			now := monoNow()
			if err = r.emit(asm.Expire(now)); err == nil {
				err = r.emitOneWay(now)
			}
		}
		if err != nil {
			return // the limit was reached, or the client cannot take more
		}
	}
}

// followers counts the follow clients (the capture is not one).
func (a *agent) followers() int {
	n := 0
	for _, s := range a.slots {
		if s != nil && s.conn != nil {
			n++
		}
	}
	return n
}

// startCapture installs the capture's selector: every flow.
func (a *agent) startCapture() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.slots[captureSlot] = &client{events: a.capture.events, sels: []decode.Selector{{}}}
	return a.tr.SetSelector(captureSlot, &decode.Selector{}, a.usedSlots())
}

// ifaces returns the traced interfaces as they are now.
func (a *agent) ifaces() []decode.Iface {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	return a.tr.Ifaces()
}

// CaptureStats makes the agent a capture metrics source.
func (a *agent) CaptureStats() (exporter.RecorderStats, bool) {
	if a.capture == nil {
		return exporter.RecorderStats{}, false
	}
	return a.capture.rec.Stats(), true
}

func (a *agent) usedSlots() int {
	n := 0
	for i, s := range a.slots {
		if s != nil {
			n = i + 1
		}
	}
	return n
}

func parseFollowRequest(req followRequest) (sels []decode.Selector, timeout, stall, oneway time.Duration, err error) {
	proto, err := decode.ParseProto(req.Proto)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	for _, s := range req.Selectors {
		sel, err := decode.ParseSelector(s)
		if err != nil {
			return nil, 0, 0, 0, err
		}
		sel.Proto = proto
		sels = append(sels, sel)
	}
	dur := func(s string, def time.Duration) (time.Duration, error) {
		if s == "" {
			return def, nil
		}
		return time.ParseDuration(s)
	}
	if timeout, err = dur(req.Timeout, 500*time.Millisecond); err != nil || timeout <= 0 {
		return nil, 0, 0, 0, fmt.Errorf("timeout %q", req.Timeout)
	}
	if stall, err = dur(req.Stall, 10*time.Millisecond); err != nil {
		return nil, 0, 0, 0, fmt.Errorf("stall %q", req.Stall)
	}
	if oneway, err = dur(req.Oneway, 3*time.Second); err != nil {
		return nil, 0, 0, 0, fmt.Errorf("oneway %q", req.Oneway)
	}
	return sels, timeout, stall, oneway, nil
}

// pcapFramePrefix starts a frame of pcapng bytes in the agent's stream to a follower.
const pcapFramePrefix = "#pcapng "

// pcapFrames sends each write (the blocks of one journey) as one frame.
type pcapFrames struct{ w io.Writer }

func (f pcapFrames) Write(b []byte) (int, error) {
	if _, err := fmt.Fprintf(f.w, "%s%d\n", pcapFramePrefix, len(b)); err != nil {
		return 0, err
	}
	return f.w.Write(b)
}

// framedPcap writes each journey, then its packets.
type framedPcap struct {
	out  exporter.Writer
	pcap *exporter.Pcap
}

func (w *framedPcap) Write(j *decode.Journey) error {
	if err := w.out.Write(j); err != nil {
		return err
	}
	return w.pcap.Write(j)
}

func (w *framedPcap) WriteOneWay(o *decode.OneWay) error { return w.out.WriteOneWay(o) }

// flagWriter counts the flows of the journeys it writes that were dropped, stalled
// or lost.
type flagWriter struct {
	exporter.Writer
	flagged *flagCounter
}

func (w *flagWriter) Write(j *decode.Journey) error {
	flagJourney(w.flagged, j)
	return w.Writer.Write(j)
}

// flagJourney counts the journey's flow if it was dropped, lost or stalled.
func flagJourney(c *flagCounter, j *decode.Journey) {
	switch {
	case j.Verdict == decode.Dropped:
		c.flag("drop", j.Flow)
	case j.Verdict == decode.Lost:
		c.flag("lost", j.Flow)
	}
	if j.Stall != nil {
		c.flag("stall", j.Flow)
	}
}
