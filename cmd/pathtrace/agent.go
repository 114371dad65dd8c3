package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/decode/diagnose"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/followapi"
	"github.com/pathtrace/pathtrace/exporter/followsrv"
	"github.com/pathtrace/pathtrace/tracer"
	"github.com/pathtrace/pathtrace/tracer/kube"
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
	tls         followapi.TLSFiles
	authKube    bool
	limits      followapi.Limits
	kube        kubeOpts
	namer       decode.Namer // from the resolver; nil: names off
	podNames    int          // --metrics-pod-names: series budget of pathtrace_pod_drops_total; 0: off
	podDrops    *exporter.PodDrops
	logFormat   string // --log-format: text or json
	logLevel    string // --log-level: debug, info, warn or error
}

func agentFlags() (*pflag.FlagSet, *agentOpts) {
	o := &agentOpts{}
	host, _ := os.Hostname()
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text (key=value) or json (an object per line), both on standard error")
	fs.StringVar(&o.logLevel, "log-level", "info", "log events of this level and above: debug, info, warn or error")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9965", "serve /metrics, /healthz and /readyz here (host:port; \"\" for none)")
	fs.StringSliceVar(&o.api, "api", []string{"unix:" + DefaultAgentSocket}, "serve followers here: unix:PATH (root only), tls:HOST:PORT (mutual TLS: --tls-*), or tcp:127.0.0.1:PORT (loopback only, no authentication); repeat for several; \"\" for none")
	fs.StringVar(&o.tls.Cert, "tls-cert", "", "tls: listeners: this agent's certificate (PEM; read again when it changes)")
	fs.StringVar(&o.tls.Key, "tls-key", "", "tls: listeners: its private key (PEM)")
	fs.StringVar(&o.tls.CA, "tls-client-ca", "", "tls: listeners: followers must present a certificate signed by this CA (PEM)")
	fs.BoolVar(&o.authKube, "auth-kube", false, "tls: listeners: a follower without a client certificate may present a Kubernetes token; the agent asks the API server who it is (TokenReview) and whether RBAC lets it create follows.pathtrace.io named after --node (SubjectAccessReview); needs the ClusterRole system:auth-delegator")
	o.limits = followapi.DefaultLimits()
	fs.IntVar(&o.limits.MaxConns, "max-followers", o.limits.MaxConns, "follower connections served at once (the rest are closed and counted)")
	fs.IntVar(&o.limits.MaxPerClient, "max-follows-per-client", o.limits.MaxPerClient, "follows at once per authenticated follower")
	fs.IntVar(&o.limits.MaxSelectors, "max-selectors-per-client", o.limits.MaxSelectors, "selectors per authenticated follower, of the kernel's 8 slots")
	fs.Float64Var(&o.limits.FollowRate, "follow-rate", o.limits.FollowRate, "new follows per second, all followers together (a burst of 8 first)")
	fs.DurationVar(&o.limits.WriteTimeout, "follower-write-timeout", o.limits.WriteTimeout, "a follower that takes nothing for this long is evicted, and told why")
	fs.Uint32Var(&o.sample, "sample", 64, "measure hop latency on 1 packet in N (1: every packet, 0: off); the default is what make bench shows costs little over none")
	fs.Uint32Var(&o.dropRate, "drop-rate", 1000, "drop events per second per CPU sent to user space beyond followed flows (the excess is counted, every drop is in the metrics)")
	fs.StringVar(&o.node, "node", host, "name of this node")
	addKubeFlags(fs, &o.kube)
	fs.BoolVar(&o.kube.nodePods, "names-node-pods", false, "watch only this node's pods (field selector spec.nodeName=--node), for clusters too large for every agent to hold every pod; pods elsewhere are then named only when a Service's endpoints point at them")
	fs.IntVar(&o.podNames, "metrics-pod-names", 0, "with Kubernetes names: count drop events per pod in pathtrace_pod_drops_total{namespace,pod,end,reason}, at most this many series (the rest under pod=\"_other_\"); 0: off, no pod in any label")
	fs.StringSliceVar(&o.ifaces, "ifaces", nil, "interfaces to trace, glob patterns (default: those found on the node: pod veths of any CNI, bridges, tunnels, uplinks); new ones are attached as they appear")
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
	o        *agentOpts
	tr       *tracer.Tracer
	srv      *followsrv.Server
	mu       sync.Mutex // tracer changes (Refresh), the notes shown
	closed   bool       // the tracer is closed
	lastLost uint64     // the tracer's losses for followers when last read (tracerSource.Lost)
	ready    atomic.Bool
	log      *slog.Logger
	flagged  flagCounter
	reasons  decode.DropReasons // the kernel's drop reason names, by number
	tunnels  decode.Tunnels     // the UDP ports of VXLAN and Geneve the tracer reads
	capDrops atomic.Uint64      // retransmit events the capture's queue could not take
	capture  *capture           // nil without --pcap-dir
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
	log, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		return usageError{err}
	}
	// From here on what goes wrong is logged, as everything else the agent says.
	// A mistake in the flags found on the way is a usage error, printed as such.
	if err := agentMain(o, log); err != nil {
		if errors.As(err, new(usageError)) {
			return err
		}
		log.Error(err.Error())
		return loggedError{err}
	}
	return nil
}

// agentMain runs the agent until a signal; log takes what it has to say.
func agentMain(o *agentOpts, log *slog.Logger) error {
	lean := leanStart()
	defer lean()
	stderr := logWriter{log}
	a := &agent{o: o, log: log}
	if o.capture.dir != "" {
		// Before anything is attached: a directory that cannot be written is an error
		// with nothing to undo.
		var err error
		if a.capture, err = newCapture(&o.capture, log); err != nil {
			return err
		}
	}

	// Followers with Kubernetes tokens: the API server reviews them.
	var tokenAuth func(context.Context, string) (string, error)
	if o.authKube {
		client, desc, err := kube.Load(kube.Config{Kubeconfig: o.kube.kubeconfig})
		if err != nil {
			return err
		}
		if client == nil {
			return usageError{fmt.Errorf("--auth-kube asks the API server about followers' tokens, but %s", strings.TrimPrefix(desc, "names off: "))}
		}
		tokenAuth = kube.NewReviewer(client, o.node, 10*time.Second).Review
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
	var alns []apiListener
	for _, api := range o.api {
		if api == "" {
			continue
		}
		l, err := listenAPI(api, o.tls, o.authKube)
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
			a.log.Warn("--metrics-pod-names needs Kubernetes names, which are off: no pod drop series")
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

	symCache := &tracer.SymbolCache{}
	rules := &sharedRules{netns: o.netns, stderr: stderr}
	defer rules.close()
	tr, err := tracer.New(tracer.Config{
		Netns: o.netns, Ifaces: o.ifaces, AttachMode: o.attachMode, DropHook: o.dropHook, NFHook: o.nfHook,
		QueueLen: o.queue, Agent: true, Sample: o.sample, DropRate: o.dropRate, SnapLen: snapLen(o),
		BTFPath: o.kernelBTF, Symbols: symCache,
	})
	if err != nil {
		return err
	}
	a.tr, a.reasons = tr, tr.Reasons()
	defer tr.Close()
	// Kernel symbols are read once, when first needed, and shared by the drop
	// counters (kernels without drop reasons), the capture and every follow.
	symbols := func() *decode.Symbols {
		syms, err := symCache.Get()
		if err != nil {
			return nil
		}
		return syms
	}
	// One reader of the node's state for every follower's diagnoses, its answers
	// shared for factsTTL.
	var facts diagnose.Facts
	if nf, err := tracer.OpenFacts(o.netns); err != nil {
		a.log.Warn("diagnoses will lack the node's state", "err", err)
	} else {
		defer nf.Close()
		facts = diagnose.Cached(nf, factsTTL)
	}
	diagnoses := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pathtrace_diagnoses_total",
		Help: "Diagnoses given to followers' journeys and one-way reports that were not a success, by cause."}, []string{"cause"})
	a.tunnels = tr.Tunnels()
	a.srv = followsrv.New(tracerSource{a}, followsrv.Config{
		Node: o.node, BootID: bootID(), Namer: o.namer, Symbols: symbols, Limits: o.limits, Slots: tracer.MaxSelectors, Tunnels: tr.Tunnels(),
		NewExplainer: func() followsrv.Explainer {
			if nf := tr.Mode().NF; nf == tracer.NFLink || nf == tracer.NFKprobe {
				// As standalone: the rule behind a netfilter drop, from the node's
				// ruleset, read by one reader for every follower.
				return rules.explainer(tr)
			}
			return nil
		},
		NewDiagnoser: func() followsrv.Diagnoser {
			return diagnose.New(diagnose.Config{Facts: facts, Ifaces: tr.Ifaces()})
		},
		OnDiagnosis: func(g *decode.Diagnosis) { diagnoses.WithLabelValues(g.Cause).Inc() },
		TokenAuth:   tokenAuth,
		Doctor:      a.doctorLines,
		OnJourney:   func(j *decode.Journey) { flagJourney(&a.flagged, j) },
		OnOther:     a.other,
		Log:         log,
		Now:         monoNow,
		WallOffset:  time.Now().UnixNano() - int64(monoNow()),
	})
	if mln != nil {
		metrics := exporter.NewMetrics(a, exporter.BuildInfo{Version: version, Kernel: kernelRelease(), AttachMode: tr.Mode().TC})
		if o.podDrops != nil {
			metrics.Registry().MustRegister(o.podDrops)
		}
		metrics.Registry().MustRegister(diagnoses)
		mux.Handle("/metrics", metrics.Handler())
	}
	// Nobody follows yet: the netfilter hooks wait for the first follower.
	if err := tr.SetNetfilter(false); err != nil {
		return err
	}
	a.ready.Store(true)
	lean()
	// The tracer handed the kernel's BTF back before attaching; attaching and setting
	// up leave garbage too: hand it back now rather than as the runtime's scavenger
	// gets to it, so the resident size is what the agent uses.
	debug.FreeOSMemory()
	names := []string{}
	for _, i := range tr.Ifaces() {
		names = append(names, i.Name+"("+i.Kind.String()+")")
	}
	a.log.Info(fmt.Sprintf("started: %s on %d interfaces", tr.Mode(), len(names)), "node", o.node, "interfaces", strings.Join(names, " "),
		"metrics", o.metricsAddr, "api", strings.Join(o.api, ","), "kernel", kernelRelease(), "version", version)
	a.log.Info("layout: "+tr.Layout().String(), "node", o.node)
	for _, n := range tr.Mode().Notes {
		a.log.Info("note: " + n)
	}
	a.mu.Lock()
	a.notesShown = len(tr.Mode().Notes)
	a.mu.Unlock()
	var capDone chan struct{}
	if a.capture != nil {
		if err := a.srv.AddLocal(captureSlot, decode.Selector{}, a.capture.events); err != nil {
			return err
		}
		capDone = make(chan struct{})
		asm := decode.NewAssembler(decode.Config{Node: o.node, Timeout: o.capture.timeout, Stall: o.capture.stall,
			VXLANPorts: tr.Tunnels().VXLANPorts, GenevePorts: tr.Tunnels().GenevePorts, Ifaces: tr.Ifaces(), LocalAddrs: tr.LocalAddrs(), Reasons: tr.Reasons(), Symbols: symbols(), KeepBytes: true})
		go func() {
			defer close(capDone)
			a.capture.run(ctx, asm, &a.flagged, a.ifaces)
		}()
		a.log.Info("capturing flagged flows to "+o.capture.dir, "history_packets", o.capture.pre, "history_age", o.capture.preAge.String(),
			"history_bytes", o.capture.historyBytes)
	}
	for _, aln := range alns {
		go a.srv.Serve(ctx, aln.Listener, aln.auth)
	}
	go a.watchLinks(ctx)
	if o.readyFile != "" {
		if err := writeReady(o.readyFile, tr); err != nil {
			return err
		}
		defer os.Remove(o.readyFile)
	}
	a.srv.Route(ctx)
	// Detach first; the followers then see their connections close.
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	cerr := a.srv.Shutdown(tr.Close)
	if capDone != nil {
		<-capDone // the open capture files are complete
	}
	a.log.Info("stopped, everything detached")
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
			a.log.Warn("link updates: subscribing again", "err", err)
		}
	}}
	if a.o.netns != "" {
		path := a.o.netns
		if !strings.Contains(path, "/") {
			path = filepath.Join("/run/netns", path)
		}
		h, err := netns.GetFromPath(path)
		if err != nil {
			a.log.Error("cannot watch interfaces of "+path, "err", err)
			return
		}
		defer h.Close()
		opts.Namespace = &h
	}
	if err := netlink.LinkSubscribeWithOptions(updates, done, opts); err != nil {
		a.log.Error("cannot watch interfaces", "err", err)
		return
	}
	var debounce, settle <-chan time.Time
	// Another datapath (a CNI) attaches its programs to a pod's veth when it likes,
	// before or after the agent did: read them again now and then.
	others := time.NewTicker(othersEvery)
	defer others.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-others.C:
			a.recheckOthers()
		case _, ok := <-updates:
			if !ok {
				return
			}
			// A burst of updates (a pod's veth is added, renamed, moved, set up)
			// is read in one refresh, soon enough that the new pod's first packets
			// are seen: make bench measures link add to attached.
			if debounce == nil {
				debounce = time.After(linkSettle)
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

// linkSettle is how long the agent waits after a link update for the rest of its
// burst before it reads the interfaces again.
const linkSettle = 10 * time.Millisecond

// othersEvery is how often the agent reads again the other datapaths' programs on its
// interfaces' hooks: two netlink dumps and two BPF queries per interface.
const othersEvery = 10 * time.Second

func (a *agent) recheckOthers() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.tr.RecheckOthers()
	fresh := a.freshNotes()
	a.mu.Unlock()
	a.printNotes(fresh)
}

// freshNotes returns the tracer's notes not shown yet and marks them shown; a.mu is
// held.
func (a *agent) freshNotes() []string {
	notes := a.tr.Mode().Notes
	fresh := notes[min(a.notesShown, len(notes)):]
	a.notesShown = len(notes)
	return fresh
}

func (a *agent) printNotes(notes []string) {
	for _, n := range notes {
		a.log.Info("note: " + n)
	}
}

func (a *agent) refresh() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	added, removed, err := a.tr.Refresh()
	fresh := a.freshNotes()
	a.mu.Unlock()
	a.printNotes(fresh)
	if len(added) > 0 {
		a.log.Info("attached to "+strings.Join(added, " "), "interfaces", len(added))
	}
	if len(removed) > 0 {
		a.log.Info("gone: "+strings.Join(removed, " "), "interfaces", len(removed))
	}
	if err != nil {
		a.log.Warn(err.Error())
	}
}

// Counters, Lost and Flagged make the agent a metrics source.
func (a *agent) Counters() (tracer.Counters, error) { return a.tr.Counters() }

func (a *agent) Lost() map[string]uint64 {
	s := a.tr.Stats()
	out := map[string]uint64{"ringbuf": 0, "ratelimit": 0, "map": 0, "queue": s.QueueDrops + a.srv.Stats().QueueDrops + a.capDrops.Load()}
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

// ifaces returns the traced interfaces as they are now.
func (a *agent) ifaces() []decode.Iface {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	return a.tr.Ifaces()
}

// FollowerStats makes the agent a follow API metrics source.
func (a *agent) FollowerStats() exporter.FollowerStats {
	s := a.srv.Stats()
	return exporter.FollowerStats{Active: s.Active, Follows: s.Follows, Evicted: s.Evicted, Refused: s.Refused}
}

// CaptureStats makes the agent a capture metrics source.
func (a *agent) CaptureStats() (exporter.RecorderStats, bool) {
	if a.capture == nil {
		return exporter.RecorderStats{}, false
	}
	return a.capture.rec.Stats(), true
}

// other takes the events no follower asked for: a retransmission flags its flow (and
// goes to the capture), a drop of a flow nobody follows flags it and counts against
// its pod.
func (a *agent) other(ev *decode.Event) {
	if ev.Kind == decode.KindRetrans {
		if f, ok := ev.CTOrig.Flow(); ok {
			a.flagged.flag("retransmit", f)
		}
		if a.capture != nil {
			select {
			case a.capture.events <- *ev:
			default:
				a.capDrops.Add(1)
			}
		}
		return
	}
	var p decode.Packet
	if a.tunnels.Parse(ev.Packet(), ev.L2, &p) == nil {
		a.flagged.flag("drop", p.Flow)
		if a.o.podDrops != nil {
			a.o.podDrops.Add(decode.NameFlow(a.o.namer, p.Flow), a.reasons[ev.Reason])
		}
	}
}

// tracerSource is the tracer as the follow server sees it; interface changes (Refresh)
// and what the server reads of them take the agent's lock.
type tracerSource struct{ a *agent }

func (s tracerSource) Events() <-chan decode.Event { return s.a.tr.Events() }

func (s tracerSource) SetSelector(slot int, sel *decode.Selector, used int) error {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	return s.a.tr.SetSelector(slot, sel, used)
}

func (s tracerSource) SetNetfilter(on bool) error {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	return s.a.tr.SetNetfilter(on)
}

// doctorLines is the agent's state for a follower's doctor request (kubectl pathtrace
// doctor): the kernel, the modes, the layout found, the interfaces traced and the notes.
func (a *agent) doctorLines() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	tr := a.tr
	names := make([]string, 0, len(tr.Ifaces()))
	for _, i := range tr.Ifaces() {
		names = append(names, i.Name+"("+i.Kind.String()+")")
	}
	out := []string{"kernel: " + kernelRelease(), "mode: " + tr.Mode().String(), "layout: " + tr.Layout().String(),
		fmt.Sprintf("interfaces (%d): %s", len(names), strings.Join(names, " "))}
	for _, n := range tr.Mode().Notes {
		out = append(out, "note: "+n)
	}
	return out
}

func (s tracerSource) View() followsrv.View {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	tr := s.a.tr
	return followsrv.View{Ifaces: tr.Ifaces(), Local: tr.LocalAddrs(), Reasons: tr.Reasons(), Pods: tr.PodPrefixes(), Mode: tr.Mode().String()}
}

func (s tracerSource) Lost() uint64 {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	if s.a.closed {
		return s.a.lastLost
	}
	st := s.a.tr.Stats()
	var n uint64
	for slot, per := range st.KernelLost {
		if slot > 2 {
			break // the agent's drop budget and full map: not the followers' events
		}
		for _, v := range per {
			n += v
		}
	}
	s.a.lastLost = n + st.QueueDrops
	return s.a.lastLost
}

func (s tracerSource) Where(sels []decode.Selector) []string {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	return podsBehind(s.a.tr, sels)
}

// apiListener is one --api listener and how it authenticates followers.
type apiListener struct {
	net.Listener
	auth followsrv.Authenticator
}

// listenAPI listens where --api says: unix:PATH (root or the agent's user, by the
// kernel's peer credentials), tls:HOST:PORT (mutual TLS), or tcp:HOST:PORT on a
// loopback address only (no authentication: anyone on the node).
func listenAPI(api string, files followapi.TLSFiles, tokens bool) (apiListener, error) {
	if path, ok := strings.CutPrefix(api, "unix:"); ok && path != "" {
		l, err := listenUnix(path)
		return apiListener{l, followsrv.UnixPeer}, err
	}
	scheme, addr, _ := strings.Cut(api, ":")
	if (scheme != "tcp" && scheme != "tls") || addr == "" {
		return apiListener{}, usageError{fmt.Errorf("--api %q: want unix:PATH, tls:HOST:PORT or tcp:127.0.0.1:PORT", api)}
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return apiListener{}, usageError{fmt.Errorf("--api %q: want %s:HOST:PORT: %v", api, scheme, err)}
	}
	var cfg *tls.Config
	if scheme == "tcp" {
		ip, err := netip.ParseAddr(host)
		if host != "localhost" && (err != nil || !ip.IsLoopback()) {
			return apiListener{}, usageError{fmt.Errorf("--api %s: a plaintext listener on a non-loopback address would hand packets to anyone who can reach it; use tls:%s with --tls-cert, --tls-key and --tls-client-ca (pathtrace certs makes them), or unix:PATH", api, addr)}
		}
	} else if cfg, err = followapi.ServerTLS(files, tokens); err != nil {
		return apiListener{}, usageError{fmt.Errorf("--api %s: %v", api, err)}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return apiListener{}, fmt.Errorf("--api %s: %w", api, err)
	}
	if cfg != nil {
		return apiListener{tls.NewListener(l, cfg), followsrv.TLSClientCert}, nil
	}
	return apiListener{l, followsrv.Loopback}, nil
}

// startGOGC is the collector's target while the kernel's BTF and the programs load:
// that is when the agent's resident size peaks (its VmHWM, which a memory limit
// counts), as parsing the BTF makes some 15 MB of garbage that GOGC 100 would let
// double the heap before collecting. 25 keeps the peak some 10 MiB lower (make bench)
// for a few more collections while starting.
const startGOGC = 25

// leanStart sets GOGC to startGOGC, unless the environment sets GOGC; the function it
// returns puts it back (once; later calls do nothing).
func leanStart() (restore func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	old := debug.SetGCPercent(startGOGC)
	var once sync.Once
	return func() { once.Do(func() { debug.SetGCPercent(old) }) }
}
