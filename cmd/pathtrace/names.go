package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/pflag"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/tracer/kube"
)

// kubeOpts are the flags of Kubernetes names, shared by follow and agent.
type kubeOpts struct {
	kubeconfig string
	names      string
	nodePods   bool // agent: watch only this node's pods
}

func addKubeFlags(fs *pflag.FlagSet, o *kubeOpts) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for pod and Service names (default: in-cluster config, $KUBECONFIG, ~/.kube/config; none found: names off)")
	fs.StringVar(&o.names, "names", "auto", "Kubernetes names of addresses: auto (on when a configuration is found) or off")
}

func (o *kubeOpts) check() error {
	if o.names != "auto" && o.names != "off" {
		return fmt.Errorf("--names %q: want auto or off", o.names)
	}
	return nil
}

// startNames starts the resolver when a configuration is found, and says in one line
// on stderr whether names are on. It returns a nil resolver (names off) when none is
// found or names are off; only a --kubeconfig that cannot be read is an error. The
// resolver's warnings (API server unreachable, RBAC denied) go to stderr, once each.
// wait: block until the first lists came (or the sync timeout passed), as follow
// needs for pod/ and svc/ selectors; else the agent goes on at once.
func startNames(ctx context.Context, o *kubeOpts, node, who string, stderr io.Writer, wait bool) (*kube.Resolver, error) {
	if o.names == "off" {
		fmt.Fprintf(stderr, "%s: names off (--names off)\n", who)
		return nil, nil
	}
	var mu sync.Mutex
	cfg := kube.Config{Kubeconfig: o.kubeconfig, Node: node, NodePodsOnly: o.nodePods, Warn: func(s string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stderr, "%s: warning: %s\n", who, s)
	}}
	client, desc, err := kube.Load(cfg)
	if err != nil {
		return nil, err
	}
	if client == nil {
		fmt.Fprintf(stderr, "%s: %s: pods and Services are shown by address\n", who, desc)
		return nil, nil
	}
	r := kube.NewResolver(client, cfg)
	start := func() {
		r.Start(ctx)
		mu.Lock()
		fmt.Fprintf(stderr, "%s: %s, from %s\n", who, r.Status(), desc)
		mu.Unlock()
	}
	if wait {
		start()
	} else {
		go start()
	}
	return r, nil
}

// kubeNamer adapts the resolver to decode.Namer.
type kubeNamer struct{ r *kube.Resolver }

func (n kubeNamer) NameOf(a netip.Addr) (kind, name string, unresolved bool) {
	nm := n.r.Name(a)
	if nm.Kind == "node" {
		return nm.Kind, nm.Name, nm.Unresolved
	}
	return nm.Kind, nm.String(), nm.Unresolved
}

// namerOf is nil (names off) for a nil resolver.
func namerOf(r *kube.Resolver) decode.Namer {
	if r == nil {
		return nil
	}
	return kubeNamer{r}
}

// splitSelectors separates pod/ and svc/ selectors from address selectors, checking the
// syntax of both.
func splitSelectors(args []string) (addrs []string, kubeSels []decode.KubeSelector, err error) {
	for _, a := range args {
		ks, ok, err := decode.ParseKubeSelector(a)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			kubeSels = append(kubeSels, ks)
			continue
		}
		addrs = append(addrs, a)
	}
	return addrs, kubeSels, nil
}

// resolveSelectors turns pod/ and svc/ selectors into address selectors, saying on
// stderr what each became.
func resolveSelectors(r *kube.Resolver, sels []decode.KubeSelector, proto uint8, stderr io.Writer) ([]decode.Selector, error) {
	var out []decode.Selector
	for _, ks := range sels {
		if r == nil {
			return nil, fmt.Errorf("%s: pod/ and svc/ selectors need a kubeconfig or in-cluster config (--kubeconfig); without one, follow addresses", ks)
		}
		got, err := r.Resolve(ks)
		if err != nil {
			return nil, err
		}
		var words []string
		for i := range got {
			got[i].Proto = proto
			words = append(words, addrSelector(got[i]))
		}
		fmt.Fprintf(stderr, "pathtrace: %s is %s\n", ks, strings.Join(words, ", "))
		out = append(out, got...)
	}
	return out, nil
}

// addrSelector writes a selector as follow's arguments take it (the protocol apart).
func addrSelector(s decode.Selector) string {
	switch {
	case s.Addr.IsValid() && s.Port != 0:
		return netip.AddrPortFrom(s.Addr, s.Port).String()
	case s.Addr.IsValid():
		return s.Addr.String()
	}
	return ":" + strconv.Itoa(int(s.Port))
}
