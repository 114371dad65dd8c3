package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/followapi"
	"github.com/pathtrace/pathtrace/exporter/followcli"
	"github.com/pathtrace/pathtrace/exporter/pathview"
	"github.com/pathtrace/pathtrace/tracer/kube"
)

// pluginName is the name kubectl runs the binary under: kubectl pathtrace ... execs
// kubectl-pathtrace from PATH.
const pluginName = "kubectl-pathtrace"

func isPlugin(argv0 string) bool {
	return strings.TrimSuffix(filepath.Base(argv0), ".exe") == pluginName
}

const pluginUsage = `kubectl pathtrace: follow packets hop by hop through the cluster's nodes, through the
pathtrace agents (the DaemonSet), and name where they died.

Usage:
  kubectl pathtrace follow [flags] [SELECTOR...]   follow packets through every node's agent;
                                                   a line per flow (-o compact), json or html;
                                                   --html FILE also writes the page to FILE
  kubectl pathtrace diagnose [flags] [SELECTOR...] follow for a while (--duration 5s), then say
                                                   per failing flow which segment fails and why
  kubectl pathtrace doctor [flags]                 each agent's kernel, modes, layout and notes
  kubectl pathtrace version                        print the version
  kubectl pathtrace help [follow|doctor]           this text, or a command's flags

SELECTOR is IP, IP:PORT, :PORT, [IPv6]:PORT, pod/NAMESPACE/NAME[:PORT] or svc/NAMESPACE/NAME[:PORT];
--pod NAME -n NAMESPACE is pod/NAMESPACE/NAME. Filters: --verdict dropped,lost,stall,...
--namespace, --node. Identity: the kubeconfig's (the agents review its token), or --tls-*.
`

// runPlugin is kubectl pathtrace: follow and diagnose through the agents the API
// server lists, doctor asks each of them.
func runPlugin(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, pluginUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "follow":
		fs, o := followFlags(true)
		if err = parseFlags(fs, args[1:], "kubectl pathtrace follow [flags] [SELECTOR...]", stdout); err == nil {
			err = followWith(o, fs.Args(), stdout, stderr)
		}
	case "diagnose":
		fs, o := followFlags(true)
		if err = parseFlags(fs, args[1:], "kubectl pathtrace diagnose [flags] [SELECTOR...]", stdout); err == nil {
			err = diagnoseWith(fs, o, stdout, stderr)
		}
	case "doctor":
		err = pluginDoctor(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "kubectl pathtrace %s\n", version)
		return 0
	case "help", "-h", "--help":
		switch {
		case len(args) > 1 && (args[1] == "follow" || args[1] == "diagnose"):
			fs, _ := followFlags(true)
			fmt.Fprintf(stdout, "Usage: kubectl pathtrace %s [flags] [SELECTOR...]\n\n%s", args[1], fs.FlagUsages())
		case len(args) > 1 && args[1] == "doctor":
			fs, _ := pluginDoctorFlags()
			fmt.Fprintf(stdout, "Usage: kubectl pathtrace doctor [flags]\n\n%s", fs.FlagUsages())
		default:
			fmt.Fprint(stdout, pluginUsage)
		}
		return 0
	default:
		err = usageError{fmt.Errorf("unknown command %q (follow, diagnose, doctor)", args[0])}
	}
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "kubectl pathtrace: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run 'kubectl pathtrace help %s' for the flags.\n", args[0])
		return 2
	}
	return 1
}

// outputConfig checks -o and the filters, and adds --pod's selectors to args.
func (o *followOpts) outputConfig(args []string) ([]string, error) {
	if o.json {
		o.output = "json"
	}
	switch o.output {
	case "text", "compact", "json":
	case "html":
		if o.pcap == "-" {
			return nil, errors.New("-o html writes the page to standard output: give --pcap a file")
		}
	default:
		return nil, fmt.Errorf("-o %q: want text, compact, json or html", o.output)
	}
	verdicts, err := exporter.ParseVerdicts(o.verdicts)
	if err != nil {
		return nil, fmt.Errorf("--verdict: %w", err)
	}
	for _, ns := range o.namespaces {
		if ns == "" || strings.Contains(ns, "/") {
			return nil, fmt.Errorf("--namespace %q: want a namespace's name", ns)
		}
	}
	o.filter = exporter.Filter{Verdicts: verdicts, Namespaces: o.namespaces, Nodes: o.nodeNames}
	if !o.filter.Empty() && o.output == "text" {
		o.output = "compact" // filters read the JSON lines; text blocks are not
	}
	args = slices.Clone(args)
	for _, p := range o.pods {
		ns, name, ok := strings.Cut(p, "/")
		if !ok {
			name = p
			switch len(o.namespaces) {
			case 0:
				ns = "default"
			case 1:
				ns = o.namespaces[0]
			default:
				return nil, fmt.Errorf("--pod %q: several --namespace given: write NAMESPACE/NAME", p)
			}
		}
		if ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("--pod %q: want NAME or NAMESPACE/NAME", p)
		}
		args = append(args, "pod/"+ns+"/"+name)
	}
	return args, nil
}

// lines reports whether the output goes through exporter.Lines (the agents and the
// tracer then write JSON lines).
func (o *followOpts) lines() bool {
	return o.output == "compact" || o.output == "html" || o.html != "" || (o.output == "json" && !o.filter.Empty())
}

// outputWriter puts the filters and the format between follow and stdout. finish
// prints what the filters left out and writes the page: to stdout for -o html, to
// --html's file (whole, or not at all) when given.
func (o *followOpts) outputWriter(stdout, stderr io.Writer) (io.Writer, func() error) {
	if !o.lines() {
		return stdout, func() error { return nil }
	}
	o.json = true
	l := &exporter.Lines{Filter: o.filter, Out: stdout}
	switch o.output {
	case "compact":
		l.Format = exporter.FormatCompact
	case "text":
		l.Format = exporter.FormatText // --html: the lines are JSON, the terminal still shows text
	case "html":
		l.Out = io.Discard
	}
	var page *pathview.Page
	if o.output == "html" || o.html != "" {
		title := o.title
		if title == "" {
			title = "pathtrace follow"
		}
		page = pathview.New(title)
		l.Also = page
	}
	return l, func() error {
		if !o.filter.Empty() {
			fmt.Fprintf(stderr, "pathtrace: %d of %d flows matched the filters\n", l.Kept, l.Seen)
		}
		if l.Unparsed > 0 {
			fmt.Fprintf(stderr, "pathtrace: warning: %d lines were not JSON or too long, left out\n", l.Unparsed)
		}
		if page == nil {
			return nil
		}
		if n := page.LeftOut(); n > 0 {
			fmt.Fprintf(stderr, "pathtrace: the page draws the first %d packets; %d more left out\n", page.Packets(), n)
		}
		var buf bytes.Buffer
		if err := page.Render(&buf); err != nil {
			return fmt.Errorf("render the page: %w", err)
		}
		if o.output == "html" {
			if _, err := stdout.Write(buf.Bytes()); err != nil {
				return fmt.Errorf("write the page to standard output: %w", err)
			}
		}
		if o.html != "" {
			if err := writeReplacing(o.html, buf.Bytes(), 0o600); err != nil { // 0600 as the captures: it names flows
				return fmt.Errorf("--html %s: %w: the page (%d packets) was not written", o.html, err, page.Packets())
			}
			fmt.Fprintf(stderr, "pathtrace: wrote %d packets to %s\n", page.Packets(), o.html)
		}
		return nil
	}
}

// onNodes keeps the agents of the named nodes (all when none is named).
func onNodes(found []kube.Agent, nodes []string) ([]kube.Agent, error) {
	if len(nodes) == 0 {
		return found, nil
	}
	var out []kube.Agent
	var have []string
	for _, a := range found {
		have = append(have, a.Node)
		if slices.Contains(nodes, a.Node) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no agent on node %s (agents run on: %s)", strings.Join(nodes, ", "), strings.Join(have, ", "))
	}
	return out, nil
}

func pluginDoctorFlags() (*pflag.FlagSet, *followOpts) {
	o := &followOpts{}
	fs := pflag.NewFlagSet("doctor", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringSliceVar(&o.nodeNames, "node", nil, "ask the agents of these nodes only, comma-separated")
	fs.StringVarP(&o.output, "output", "o", "text", "output: text, or json (an object per agent, per line)")
	fs.StringVar(&o.agentNS, "agent-namespace", "pathtrace", "the namespace of the agents' DaemonSet (pods labelled app.kubernetes.io/name=pathtrace-agent)")
	addKubeFlags(fs, &o.kube)
	fs.StringVar(&o.tls.CA, "tls-ca", "", "the CA that signs the agents' certificates (PEM; default: from their ConfigMap)")
	fs.StringVar(&o.tls.Cert, "tls-cert", "", "this client's certificate (PEM; default: the kubeconfig's token)")
	fs.StringVar(&o.tls.Key, "tls-key", "", "its private key (PEM)")
	fs.StringVar(&o.tlsName, "tls-server-name", followapi.DefaultServerName, "the name the agents' certificates must carry")
	return fs, o
}

// agentDoctor is one agent's answer to kubectl pathtrace doctor.
type agentDoctor struct {
	Node  string   `json:"node"`
	Addr  string   `json:"addr"`
	Mode  string   `json:"mode,omitempty"`
	State []string `json:"state,omitempty"`
	Error string   `json:"error,omitempty"`
}

// pluginDoctor asks every agent (of --node) for its state. An agent that does not
// answer is shown with why, and makes the exit status 1.
func pluginDoctor(args []string, stdout, stderr io.Writer) error {
	fs, o := pluginDoctorFlags()
	if err := parseFlags(fs, args, "kubectl pathtrace doctor [flags]", stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("doctor takes no arguments, got %q", fs.Args())}
	}
	if o.output != "text" && o.output != "json" {
		return usageError{fmt.Errorf("-o %q: want text or json", o.output)}
	}
	if err := o.kube.check(); err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := startNames(ctx, &o.kube, "", "kubectl pathtrace", io.Discard, true)
	if err != nil {
		return err
	}
	if res == nil {
		return errors.New("doctor finds the agents through the API server: it needs a kubeconfig or in-cluster config (--kubeconfig)")
	}
	found, err := res.Agents(ctx, o.agentNS, "app.kubernetes.io/name=pathtrace-agent")
	if err != nil {
		return err
	}
	if found, err = onNodes(found, o.nodeNames); err != nil {
		return err
	}
	if err := o.kubeAuth(ctx, res); err != nil {
		return err
	}
	tlsCfg, err := followapi.ClientTLS(o.tls, o.caPEM, o.tlsName)
	if err != nil {
		return usageError{err}
	}
	failed := 0
	enc := json.NewEncoder(stdout)
	for _, a := range found {
		d := agentDoctor{Node: a.Node, Addr: a.Addr}
		c, err := followcli.Dial(followcli.Addr{Network: "tls", Addr: a.Addr}, followapi.Request{Token: o.token, Doctor: true}, tlsCfg)
		if err != nil {
			d.Error = err.Error()
			failed++
		} else {
			d.Mode, d.State = c.Reply.Mode, c.Reply.Doctor
			c.Close()
		}
		if o.output == "json" {
			if err := enc.Encode(d); err != nil {
				return err
			}
			continue
		}
		// What an agent sends is shown without its control characters.
		fmt.Fprintf(stdout, "node %s (agent %s):\n", printable(d.Node), d.Addr)
		if d.Error != "" {
			fmt.Fprintf(stdout, "  error: %s\n", printable(d.Error))
			continue
		}
		if len(d.State) == 0 {
			fmt.Fprintf(stdout, "  mode: %s\n", printable(d.Mode))
		}
		for _, l := range d.State {
			fmt.Fprintf(stdout, "  %s\n", printable(l))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d agents did not answer", failed, len(found))
	}
	return nil
}

// printable replaces control characters (a terminal's escapes) with spaces.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}
