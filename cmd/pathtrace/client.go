package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter/followapi"
	"github.com/pathtrace/pathtrace/exporter/followcli"
	"github.com/pathtrace/pathtrace/tracer/kube"
)

// agentAddrs returns the agents to follow through: those named with --agents, or the
// default socket when an agent answers there; none means trace standalone.
func agentAddrs(flag []string) ([]followcli.Addr, error) {
	if len(flag) == 0 {
		c, err := net.DialTimeout("unix", DefaultAgentSocket, 500*time.Millisecond)
		if err != nil {
			return nil, nil
		}
		c.Close()
		return []followcli.Addr{{Network: "unix", Addr: DefaultAgentSocket}}, nil
	}
	var out []followcli.Addr
	for _, a := range flag {
		addr, err := followcli.ParseAddr(a)
		if err != nil {
			return nil, usageError{fmt.Errorf("--agents %v", err)}
		}
		out = append(out, addr)
	}
	return out, nil
}

// kubeAgents finds every node's agent through the API server: the DaemonSet's running
// pods, at their address and the port named "api".
// They serve TLS (deploy/daemonset.yaml).
func kubeAgents(ctx context.Context, r *kube.Resolver, namespace string, nodes []string) ([]followcli.Addr, error) {
	if r == nil {
		return nil, errors.New("--agents k8s finds the agents through the API server: it needs a kubeconfig or in-cluster config (--kubeconfig)")
	}
	found, err := r.Agents(ctx, namespace, "app.kubernetes.io/name=pathtrace-agent")
	if err != nil {
		return nil, err
	}
	if found, err = onNodes(found, nodes); err != nil {
		return nil, err
	}
	var out []followcli.Addr
	for _, a := range found {
		out = append(out, followcli.Addr{Network: "tls", Addr: a.Addr})
	}
	return out, nil
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
func followViaAgents(addrs []followcli.Addr, o *followOpts, sels []string, stdout, stderr io.Writer, pc *pcapOut, namer decode.Namer) error {
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
	var conns []*followcli.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	down := map[string]string{} // agents that did not answer: address → why
	for _, a := range addrs {
		ac, err := followcli.Dial(a, req, tlsCfg)
		if err != nil {
			if errors.Is(err, followcli.ErrUsage) {
				return usageError{errors.New(strings.TrimPrefix(err.Error(), followcli.ErrUsage.Error()+": "))}
			}
			if !join {
				return err
			}
			fmt.Fprintf(stderr, "pathtrace: warning: %v: paths through its node will say so\n", err)
			down[a.String()] = err.Error()
			continue
		}
		fmt.Fprintf(stderr, "pathtrace: following %s through the agent of node %s (%s): %s\n", strings.Join(sels, ", "), ac.Reply.Node, a, ac.Reply.Mode)
		for _, w := range ac.Reply.Where {
			fmt.Fprintf(stderr, "pathtrace: node %s: %s\n", ac.Reply.Node, w)
		}
		for _, cl := range ac.Reply.Clamped {
			fmt.Fprintf(stderr, "pathtrace: node %s: the agent's limit: %s\n", ac.Reply.Node, cl)
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
			names = append(names, c.Addr.String())
		}
		if err := writeReadyFile(o.readyFile, "agents: "+strings.Join(names, ",")+"\n"); err != nil {
			return err
		}
		defer os.Remove(o.readyFile)
	}
	sink := followcli.Sink{Warn: stderr, Notice: func(ac *followcli.Conn, f followapi.Frame) { followcli.Notice(stderr, ac, f) }}
	if pc != nil {
		sink.Pcap = func(i int, b []byte) { pc.frame(i, b, stderr) }
	}
	var written int
	var err error
	if join {
		var st decode.JoinStats
		written, st, err = followcli.Join(ctx, stop, conns, followcli.JoinConfig{Count: o.count, Wait: max(o.joinWait, o.timeout),
			JSON: o.json, Namer: namer, Down: down}, stdout, sink)
		fmt.Fprintf(stderr, "pathtrace: joined %d journeys from %d nodes into %d paths (%d across nodes, %d lost on the underlay, %d through a node whose agent did not answer)\n",
			st.Legs, len(conns), st.Paths, st.Joined, st.UnderlayLost, st.NodeMissing)
	} else {
		written, err = followcli.Copy(ctx, stop, conns[0], o.count, stdout, sink)
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
