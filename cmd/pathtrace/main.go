package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/cmd/pathtrace/internal/earlysig"
	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/decode/diagnose"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/followapi"
	"github.com/pathtrace/pathtrace/exporter/followcli"
	"github.com/pathtrace/pathtrace/tracer"
)

// version is set by the linker: -ldflags "-X main.version=..."
var version = "dev"

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ error }

const usage = `pathtrace: follow packets hop by hop through a node, and name where they died.

Usage:
  pathtrace follow [flags] SELECTOR...   trace packets matching SELECTOR
  pathtrace diagnose [flags] SELECTOR... follow for a while (--duration 5s), then say per failing
                                         flow which segment fails, why, with evidence, and the fix
  pathtrace agent [flags]                the always-on node agent: metrics, and follow through its API
  pathtrace doctor [--json] [--programs] what this kernel offers, and the mode each part will run in
  pathtrace certs --out DIR              make the CA and certificates of the agents' TLS API
  pathtrace version                      print the version
  pathtrace help [follow]                this text, or a command's flags

SELECTOR is IP, IP:PORT, :PORT, IPv6 or [IPv6]:PORT; both directions of a flow match.
`

func main() {
	if isPlugin(os.Args[0]) {
		os.Exit(runPlugin(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// signalContext is cancelled by the first interrupt or SIGTERM, or by its cancel.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		select {
		case <-earlysig.Signals():
			stop()
		case <-ctx.Done():
		}
	}()
	return ctx, stop
}

// parseFlags parses a subcommand's flags: --help prints its usage, a mistake is a
// usage error.
func parseFlags(fs *pflag.FlagSet, args []string, usageLine string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: %s\n\n%s", usageLine, fs.FlagUsages())
			return err
		}
		return usageError{err}
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "follow":
		err = follow(args[1:], stdout, stderr)
	case "diagnose":
		err = runDiagnose(args[1:], stdout, stderr)
	case "agent":
		err = runAgent(args[1:], stdout, stderr)
	case "doctor":
		err = doctor(args[1:], stdout)
	case "certs":
		err = runCerts(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "pathtrace %s\n", version)
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] == "diagnose" {
			fs, _ := followFlags(false)
			fmt.Fprintf(stdout, "Usage: %s\n\nThe flags of follow; --duration defaults to 5s, --json prints one object per failing flow.\n\n%s", diagnoseUsage, fs.FlagUsages())
			return 0
		}
		if len(args) > 1 && args[1] == "follow" {
			fs, _ := followFlags(false)
			fmt.Fprintf(stdout, "Usage: pathtrace follow [flags] SELECTOR...\n\n%s", fs.FlagUsages())
			return 0
		}
		if len(args) > 1 && args[1] == "doctor" {
			fs, _ := doctorFlags()
			fmt.Fprintf(stdout, "Usage: %s\n\n%s", doctorUsage, fs.FlagUsages())
			return 0
		}
		if len(args) > 1 && args[1] == "agent" {
			fs, _ := agentFlags()
			fmt.Fprintf(stdout, "Usage: pathtrace agent [flags]\n\n%s", fs.FlagUsages())
			return 0
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usageError{fmt.Errorf("unknown command %q", args[0])}
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if errors.As(err, new(loggedError)) {
		return 1
	}
	fmt.Fprintf(stderr, "pathtrace: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run 'pathtrace help follow' for the flags.\n")
		return 2
	}
	return 1
}

type followOpts struct {
	proto      string
	json       bool
	duration   time.Duration
	count      int
	timeout    time.Duration
	stall      time.Duration
	oneway     time.Duration
	noRules    bool
	node       string
	readyFile  string
	ifaces     []string
	attachMode string
	dropHook   string
	nfHook     string
	netns      string
	vxlanPorts []uint
	gnvPorts   []uint
	snaplen    int
	queue      int
	ringSize   int
	agents     []string
	joinWait   time.Duration
	agentNS    string
	tls        followapi.TLSFiles // for tls: agents
	tlsName    string
	token      string // --agents k8s without --tls-cert: the kubeconfig's bearer token
	caPEM      []byte // --agents k8s without --tls-ca: the agents' CA from their ConfigMap
	kube       kubeOpts
	kubeSels   []decode.KubeSelector // pod/ and svc/ selectors, resolved once names are up
	protoNum   uint8
	pcap       string
	html       string // --html FILE: the page written when follow ends
	title      string // the page's title: the command
	kernelBTF  string
	// Output and Hubble-style filters.
	output     string
	verdicts   []string
	pods       []string
	namespaces []string
	nodeNames  []string
	filter     exporter.Filter
}

// kernelBTFFlag is --kernel-btf, for every command that loads or probes the programs.
func kernelBTFFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "kernel-btf", "", "load the programs against this BTF file instead of "+tracer.KernelBTF+" (for kernels without CONFIG_DEBUG_INFO_BTF; e.g. from BTFHub)")
}

// followFlags are follow's and diagnose's flags; plugin: as kubectl pathtrace, where
// following goes through the cluster's agents (--agents k8s), the output is compact
// and --node names the nodes to follow on.
func followFlags(plugin bool) (*pflag.FlagSet, *followOpts) {
	o := &followOpts{}
	host, _ := os.Hostname()
	fs := pflag.NewFlagSet("follow", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.proto, "proto", "any", "protocol: tcp, udp, icmp, icmpv6 or any")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per packet journey, per line (as -o json)")
	outDef := "text"
	if plugin {
		outDef = "compact"
	}
	fs.StringVarP(&o.output, "output", "o", outDef, "output: text (blocks of hops), compact (a line per flow), json (a JSON object per line) or html (a page with a picture of each packet's path, written to standard output when follow ends)")
	fs.StringSliceVar(&o.verdicts, "verdict", nil, "print only the flows with this verdict, comma-separated: delivered, forwarded, dropped, lost, incomplete, redirected, unfinished, lost_underlay, node_missing, stall (a hop was slow), oneway or failed (all but delivered and forwarded)")
	fs.StringSliceVar(&o.pods, "pod", nil, "follow this pod, [NAMESPACE/]NAME (NAMESPACE: --namespace, else default); as the selector pod/NAMESPACE/NAME")
	fs.StringSliceVarP(&o.namespaces, "namespace", "n", nil, "print only the flows from or to a pod of these namespaces (needs names: a kubeconfig); also --pod's namespace")
	if !plugin {
		fs.StringSliceVar(&o.nodeNames, "node-name", nil, "print only the flows seen on these nodes; with --agents k8s, follow through these nodes' agents only")
	}
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until interrupted)")
	fs.IntVar(&o.count, "count", 0, "stop after this many packet journeys (0: no limit)")
	fs.DurationVar(&o.timeout, "timeout", 500*time.Millisecond, "a packet with no further event for this long is judged (lost if nothing ended it)")
	fs.DurationVar(&o.stall, "stall", 10*time.Millisecond, "report a stall when a hop-to-hop delay exceeds this (0: off)")
	fs.DurationVar(&o.oneway, "oneway", 3*time.Second, "report a TCP connection whose SYNs got no answer for this long (0: off)")
	fs.BoolVar(&o.noRules, "no-rules", false, "do not read the netfilter ruleset to name the rule behind a drop")
	if plugin {
		fs.StringSliceVar(&o.nodeNames, "node", nil, "follow on these nodes only (their agents), comma-separated")
		o.node = host
	} else {
		fs.StringVar(&o.node, "node", host, "name of this node in the output")
	}
	fs.StringVar(&o.readyFile, "ready-file", "", "write this file once every program is attached")
	fs.StringSliceVar(&o.ifaces, "ifaces", nil, "interfaces to trace, glob patterns (default: those found on the node: pod veths of any CNI, bridges, tunnels, uplinks)")
	fs.StringVar(&o.attachMode, "attach-mode", tracer.AttachAuto, "tc attachment: auto (tcx, else clsact), tcx or clsact")
	fs.StringVar(&o.dropHook, "drop-hook", tracer.DropAuto, "kfree_skb hook: auto (tp_btf, else raw_tp), tp_btf, raw_tp, raw_tp_noreason (as before 5.17) or none")
	fs.StringVar(&o.nfHook, "nf-hook", tracer.NFAuto, "netfilter hooks: auto (netfilter links, else a kprobe on nf_hook_slow), link, kprobe or none")
	fs.StringVar(&o.netns, "netns", "", "trace in this network namespace (name under /run/netns, or a path) instead of the current one")
	fs.UintSliceVar(&o.vxlanPorts, "vxlan-ports", nil, "UDP ports that carry VXLAN, at most 4 (default: 8472, 4789 and the ports of the node's VXLAN devices)")
	fs.UintSliceVar(&o.gnvPorts, "geneve-ports", nil, "UDP ports that carry Geneve, at most 4 (default: 6081 and the ports of the node's Geneve devices)")
	fs.IntVar(&o.snaplen, "snaplen", decode.SnapMax, fmt.Sprintf("packet bytes copied per event, 64..%d; above %d the kernel sends events as long as their packets (whole packets up to %d bytes; raise --ring-size)", decode.SnapFull, decode.SnapMax, decode.SnapFull))
	fs.IntVar(&o.queue, "queue", 16384, "events buffered between the kernel and the decoder (dropped and counted beyond)")
	var agentsDef []string
	if plugin {
		agentsDef = []string{"k8s"}
	}
	fs.StringSliceVar(&o.agents, "agents", agentsDef, "follow through these agents (unix:PATH, tls:HOST:PORT or tcp:HOST:PORT, comma-separated; several nodes' journeys of a packet are joined into one path; k8s: every node's agent, found through the API server); default: the agent at unix:"+DefaultAgentSocket+" if one answers, else trace standalone")
	fs.StringVar(&o.agentNS, "agent-namespace", "pathtrace", "with --agents k8s: the namespace of the agents' DaemonSet (pods labelled app.kubernetes.io/name=pathtrace-agent)")
	fs.StringVar(&o.tls.CA, "tls-ca", "", "tls: agents: the CA that signs the agents' certificates (PEM)")
	fs.StringVar(&o.tls.Cert, "tls-cert", "", "tls: agents: this follower's certificate (PEM), signed by the agents' --tls-client-ca")
	fs.StringVar(&o.tls.Key, "tls-key", "", "tls: agents: its private key (PEM)")
	fs.StringVar(&o.tlsName, "tls-server-name", followapi.DefaultServerName, "tls: agents: the name their certificates must carry")
	addKubeFlags(fs, &o.kube)
	fs.DurationVar(&o.joinWait, "join-wait", time.Second, "with several agents: how long a packet's journey on one node waits for its journeys on the others (at least --timeout)")
	fs.StringVar(&o.pcap, "pcap", "", "also write the followed packets, as seen at every hop, to this pcapng file (\"-\": standard output, and the journeys go to standard error)")
	fs.StringVar(&o.html, "html", "", "also write a page with a picture of each packet's path (nodes as lanes, hops with their latency, the underlay crossing, NAT, the drop or stall with its reason) to this HTML file when follow ends; self-contained, it loads nothing")
	kernelBTFFlag(fs, &o.kernelBTF)
	fs.IntVar(&o.ringSize, "ring-size", 4<<20, "kernel ring buffer bytes, a power of two (events beyond are dropped and counted per CPU)")
	return fs, o
}

func follow(args []string, stdout, stderr io.Writer) (err error) {
	fs, o := followFlags(false)
	if err := parseFlags(fs, args, "pathtrace follow [flags] SELECTOR...", stdout); err != nil {
		return err
	}
	return followWith(o, fs.Args(), stdout, stderr)
}

// runDiagnose follows for a while (--duration, 5 s by default) with the journeys as
// JSON into a report, then prints one block per failing flow: the segment, the
// cause, the evidence and the fix.
func runDiagnose(args []string, stdout, stderr io.Writer) error {
	fs, o := followFlags(false)
	if err := parseFlags(fs, args, diagnoseUsage, stdout); err != nil {
		return err
	}
	return diagnoseWith(fs, o, stdout, stderr)
}

func diagnoseWith(fs *pflag.FlagSet, o *followOpts, stdout, stderr io.Writer) error {
	if !fs.Changed("duration") {
		o.duration = 5 * time.Second
	}
	if o.duration <= 0 {
		return usageError{errors.New("diagnose needs a --duration above 0: it reports when it ends")}
	}
	if o.pcap == "-" {
		return usageError{errors.New("diagnose writes its report to standard output: give --pcap a file")}
	}
	asJSON := o.json || o.output == "json"
	switch o.output {
	case "text", "json", "compact": // the plugin's default is compact: the report is the same
	default:
		return usageError{fmt.Errorf("-o %q: diagnose prints text or json", o.output)}
	}
	o.json, o.output = true, "json"
	rep := exporter.NewReport()
	start := time.Now()
	if err := followWith(o, fs.Args(), rep, stderr); err != nil {
		return err
	}
	if asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteText(stdout, time.Since(start))
}

const diagnoseUsage = "pathtrace diagnose [--duration D] [follow's flags] SELECTOR..."

func followWith(o *followOpts, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := o.tracerConfig(args)
	if err != nil {
		return usageError{err}
	}
	if o.readyFile != "" {
		if err := checkWritable(o.readyFile); err != nil {
			return err
		}
	}
	if o.html != "" {
		if err := checkHTMLWritable(o.html); err != nil {
			return err
		}
	}
	o.title = strings.TrimSpace("pathtrace follow " + strings.Join(args, " "))
	pc, err := openPcapOut(o.pcap, stdout)
	if err != nil {
		return err
	}
	if o.pcap == "-" {
		stdout = stderr
	}
	defer func() {
		if cerr := pc.close(stderr); err == nil {
			err = cerr
		}
	}()
	stdout, finish := o.outputWriter(stdout, stderr)
	defer func() {
		ferr := finish()
		switch {
		case err == nil:
			err = ferr
		case ferr != nil:
			fmt.Fprintf(stderr, "pathtrace: %v\n", ferr)
		}
	}()
	// Kubernetes names: waited for when selectors or agents need them now.
	nctx, ncancel := context.WithCancel(context.Background())
	defer ncancel()
	k8sAgents := len(o.agents) == 1 && o.agents[0] == "k8s"
	res, err := startNames(nctx, &o.kube, "", "pathtrace", stderr, len(o.kubeSels) > 0 || k8sAgents || len(o.filter.Namespaces) > 0)
	if err != nil {
		return err
	}
	if res == nil && len(o.filter.Namespaces) > 0 && len(o.agents) == 0 {
		return usageError{errors.New("--namespace prints the flows of a namespace's pods: it needs their names, and names are off (no kubeconfig found, or --names off)")}
	}
	kubeSels, err := resolveSelectors(res, o.kubeSels, o.protoNum, stderr)
	if err != nil {
		return err
	}
	cfg.Selectors = append(cfg.Selectors, kubeSels...)
	if len(cfg.Selectors) > tracer.MaxSelectors {
		return fmt.Errorf("%d addresses to follow: at most %d (name a port, or one pod of the Service)", len(cfg.Selectors), tracer.MaxSelectors)
	}
	sels := make([]string, len(cfg.Selectors))
	for i, s := range cfg.Selectors {
		sels[i] = addrSelector(s)
	}
	var addrs []followcli.Addr
	if k8sAgents {
		if addrs, err = kubeAgents(nctx, res, o.agentNS, o.nodeNames); err != nil {
			return err
		}
		if err := o.kubeAuth(nctx, res); err != nil {
			return err
		}
	} else if addrs, err = agentAddrs(o.agents); err != nil {
		return err
	}
	if len(addrs) > 0 {
		return followViaAgents(addrs, o, sels, stdout, stderr, pc, namerOf(res))
	}

	ctx, stop := signalContext()
	defer stop()

	// The kernel's symbols (drop locations) are read while the programs load and
	// attach: a quarter of a second on a 2-CPU node.
	type symsRead struct {
		syms *decode.Symbols
		err  error
	}
	symsc := make(chan symsRead, 1)
	go func() {
		syms, err := tracer.LoadSymbols()
		symsc <- symsRead{syms, err}
	}()
	lean := leanStart()
	tr, err := tracer.New(cfg)
	lean()
	if err != nil {
		return err
	}
	defer tr.Close()

	sr := <-symsc
	syms := sr.syms
	if sr.err != nil {
		fmt.Fprintf(stderr, "pathtrace: drop locations in hex: %v\n", sr.err)
	}
	asm := decode.NewAssembler(decode.Config{
		Node: o.node, Timeout: o.timeout, Stall: o.stall, VXLANPorts: tr.Tunnels().VXLANPorts, GenevePorts: tr.Tunnels().GenevePorts,
		Ifaces: tr.Ifaces(), LocalAddrs: tr.LocalAddrs(), Reasons: tr.Reasons(), Symbols: syms,
		KeepBytes: pc != nil,
	})
	clock := exporter.Clock{OffsetNs: time.Now().UnixNano() - int64(monoNow())}
	text := exporter.NewText(stdout)
	text.SetNamer(namerOf(res))
	var out exporter.Writer = text
	if o.json {
		js := exporter.NewJSON(stdout, clock)
		js.SetNamer(namerOf(res))
		out = js
	}
	if pc != nil {
		out = pc.tee(out, clock, o.snaplen, strings.Join(args, " "), stderr)
	}

	names := make([]string, 0, len(tr.Ifaces()))
	for _, i := range tr.Ifaces() {
		names = append(names, i.Name+"("+i.Kind.String()+")")
	}
	shown := make([]string, len(cfg.Selectors))
	for i, s := range cfg.Selectors {
		shown[i] = s.String()
	}
	fmt.Fprintf(stderr, "pathtrace: node %s: following %s; %s on %d interfaces: %s\n",
		o.node, strings.Join(shown, ", "), tr.Mode(), len(names), strings.Join(names, " "))
	fmt.Fprintf(stderr, "pathtrace: node %s: layout: %s\n", o.node, tr.Layout())
	for _, n := range tr.Mode().Notes {
		fmt.Fprintf(stderr, "pathtrace: note: %s\n", n)
	}
	for _, w := range podsBehind(tr, cfg.Selectors) {
		fmt.Fprintf(stderr, "pathtrace: node %s: %s\n", o.node, w)
	}
	r := &runner{asm: asm, out: out, tr: tr, stderr: stderr, limit: o.count}
	if o.oneway > 0 {
		r.watch = decode.NewFlowWatch(o.oneway)
	}
	facts, ferr := tracer.OpenFacts(o.netns)
	if ferr != nil {
		fmt.Fprintf(stderr, "pathtrace: note: diagnoses will lack the node's state: %v\n", ferr)
		r.diag = diagnose.New(diagnose.Config{Ifaces: tr.Ifaces()})
	} else {
		defer facts.Close()
		r.diag = diagnose.New(diagnose.Config{Facts: diagnose.Cached(facts, factsTTL), Ifaces: tr.Ifaces()})
	}
	if tr.Mode().NF != tracer.NFNone && !o.noRules {
		// The rule counters are read before the ready file says so: a drop after it
		// is then a rise (under emulation this first read takes seconds).
		r.expl = newExplainer(o.netns, tr, stderr)
		defer r.expl.Close()
	}
	if o.readyFile != "" {
		if err := writeReady(o.readyFile, tr); err != nil {
			return err
		}
		defer os.Remove(o.readyFile)
	}
	return r.loop(ctx, o.duration)
}

func (o *followOpts) tracerConfig(args []string) (tracer.Config, error) {
	var cfg tracer.Config
	args, err := o.outputConfig(args)
	if err != nil {
		return cfg, err
	}
	if len(args) == 0 {
		return cfg, errors.New("follow needs a SELECTOR (IP, IP:PORT, :PORT, [IPv6]:PORT, pod/NAMESPACE/NAME[:PORT] or svc/NAMESPACE/NAME[:PORT]) or --pod")
	}
	if len(args) > tracer.MaxSelectors {
		return cfg, fmt.Errorf("%d selectors: at most %d", len(args), tracer.MaxSelectors)
	}
	proto, err := decode.ParseProto(o.proto)
	if err != nil {
		return cfg, err
	}
	addrArgs, kubeSels, err := splitSelectors(args)
	if err != nil {
		return cfg, err
	}
	o.kubeSels, o.protoNum = kubeSels, proto
	for _, a := range addrArgs {
		s, err := decode.ParseSelector(a)
		if err != nil {
			return cfg, err
		}
		s.Proto = proto
		cfg.Selectors = append(cfg.Selectors, s)
	}
	if err := o.kube.check(); err != nil {
		return cfg, err
	}
	if o.count < 0 || o.duration < 0 || o.timeout <= 0 || o.stall < 0 || o.oneway < 0 {
		return cfg, errors.New("--count, --duration, --stall and --oneway must not be negative, --timeout must be positive")
	}
	if o.snaplen < 64 || o.snaplen > decode.SnapFull {
		return cfg, fmt.Errorf("--snaplen %d: want 64..%d", o.snaplen, decode.SnapFull)
	}
	if cfg.VXLANPorts, err = udpPorts("--vxlan-ports", o.vxlanPorts); err != nil {
		return cfg, err
	}
	if cfg.GenevePorts, err = udpPorts("--geneve-ports", o.gnvPorts); err != nil {
		return cfg, err
	}
	if o.queue < 1 {
		return cfg, errors.New("--queue must be positive")
	}
	if strings.TrimSpace(o.node) == "" {
		return cfg, errors.New("--node must not be empty")
	}
	cfg.Netns = o.netns
	cfg.BTFPath = o.kernelBTF
	cfg.Ifaces = o.ifaces
	cfg.AttachMode = o.attachMode
	cfg.DropHook = o.dropHook
	cfg.NFHook = o.nfHook
	switch cfg.NFHook {
	case tracer.NFAuto, tracer.NFLink, tracer.NFKprobe, tracer.NFNone:
	default:
		return cfg, fmt.Errorf("--nf-hook %q: want auto, link, kprobe or none", cfg.NFHook)
	}
	cfg.SnapLen = o.snaplen
	cfg.QueueLen = o.queue
	cfg.RingBytes = o.ringSize
	if o.ringSize < os.Getpagesize() || o.ringSize&(o.ringSize-1) != 0 {
		return cfg, fmt.Errorf("--ring-size %d: want a power of two of at least %d", o.ringSize, os.Getpagesize())
	}
	switch cfg.AttachMode {
	case tracer.AttachAuto, tracer.AttachTCX, tracer.AttachClsact:
	default:
		return cfg, fmt.Errorf("--attach-mode %q: want auto, tcx or clsact", cfg.AttachMode)
	}
	switch cfg.DropHook {
	case tracer.DropAuto, tracer.DropTPBTF, tracer.DropRawTP, tracer.DropRawTPNoReason, tracer.DropNone:
	default:
		return cfg, fmt.Errorf("--drop-hook %q: want auto, tp_btf, raw_tp, raw_tp_noreason or none", cfg.DropHook)
	}
	return cfg, nil
}

// checkWritable fails early, before anything is attached, when the ready file could
// not be written.
func checkWritable(path string) error {
	if err := checkReplaceable(path); err != nil {
		return fmt.Errorf("--ready-file %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".pathtrace-ready-*")
	if err != nil {
		return fmt.Errorf("--ready-file %s: cannot write in %s: %w", path, filepath.Dir(path), err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// checkHTMLWritable fails, before anything is traced, when --html's file could not
// be written at the end: a link or special file at the name, or a directory that
// takes no new file.
func checkHTMLWritable(path string) error {
	if err := checkReplaceable(path); err != nil {
		return fmt.Errorf("--html %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".pathtrace-html-*")
	if err != nil {
		return fmt.Errorf("--html %s: cannot write in %s: %w: name a file in a directory you may write to", path, filepath.Dir(path), err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// writeReady writes the ready file whole, so a script that sees it sees all of it.
func writeReady(path string, tr *tracer.Tracer) error {
	return writeReadyFile(path, fmt.Sprintf("mode: %s\nlayout: %s\nattached: %s\n", tr.Mode(), tr.Layout(), strings.Join(tr.Attachments(), ", ")))
}

// writeReadyFile writes body to a new file renamed to path: no link at path is written
// through (safefile.go). Mode 0644: it says how the programs are attached, as
// `pathtrace doctor` does to anyone, and a script waiting for it need not run as root.
func writeReadyFile(path, body string) error {
	if err := writeReplacing(path, []byte(body), 0o644); err != nil {
		return fmt.Errorf("write --ready-file: %w", err)
	}
	return nil
}

func monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// podsBehind says, for each selector address that is one of the node's pods, which
// veth the pod is behind (or why that is not known), so that nobody needs to look it
// up with ip route and bridge fdb.
func podsBehind(tr *tracer.Tracer, sels []decode.Selector) []string {
	var out []string
	for _, s := range sels {
		if !s.Addr.IsValid() {
			continue
		}
		local := false
		for _, p := range tr.PodPrefixes() {
			local = local || p.Contains(s.Addr.Unmap())
		}
		veth, err := tr.PodVeth(s.Addr)
		switch {
		case err == nil:
			out = append(out, fmt.Sprintf("%s is the pod behind %s", s.Addr, veth))
		case local:
			out = append(out, fmt.Sprintf("%s is in this node's pod network, but its veth is unknown: %v", s.Addr, err))
		}
	}
	return out
}

// udpPorts checks a tunnel's port flag: at most 4 ports, each 1..65535; nil when the
// flag was not given (the tracer then takes the defaults and the node's devices').
func udpPorts(flag string, in []uint) ([]uint16, error) {
	if len(in) > 4 {
		return nil, fmt.Errorf("%s: at most 4", flag)
	}
	var out []uint16
	for _, p := range in {
		if p == 0 || p > 65535 {
			return nil, fmt.Errorf("%s: %d is not a port", flag, p)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}
