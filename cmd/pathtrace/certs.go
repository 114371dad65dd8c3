package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/pathtrace/pathtrace/exporter/followapi"
)

const certsUsage = "pathtrace certs --out DIR [flags]"

// runCerts makes the CA and certificates that the agents' TLS API and a follower need.
func runCerts(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("certs", pflag.ContinueOnError)
	fs.SortFlags = false
	r := followapi.CertRequest{Now: time.Now()}
	fs.StringVar(&r.Dir, "out", "", "write ca.crt, ca.key, agent.crt, agent.key, follower.crt, follower.key here (created 0700; nothing is overwritten)")
	fs.StringVar(&r.ServerName, "server-name", followapi.DefaultServerName, "the name every agent's certificate carries, which followers verify (--tls-server-name)")
	fs.StringVar(&r.Follower, "follower", "oncall", "the follower certificate's common name: its identity in the agents' logs and limits")
	fs.DurationVar(&r.Validity, "validity", 90*24*time.Hour, "how long the certificates are valid")
	fs.StringVar(&r.CADir, "ca", "", "issue only a follower's certificate, signed by the CA (ca.crt, ca.key) in this directory")
	if err := parseFlags(fs, args, certsUsage, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 || r.Dir == "" {
		return usageError{fmt.Errorf("usage: %s", certsUsage)}
	}
	if r.Validity <= 0 {
		return usageError{fmt.Errorf("--validity %v: want a positive duration", r.Validity)}
	}
	if err := followapi.MakeCerts(r); err != nil {
		return err
	}
	if r.CADir != "" {
		fmt.Fprintf(stderr, "pathtrace certs: wrote follower.crt, follower.key (%s) in %s, valid until %s\n", r.Follower, r.Dir, r.Now.Add(r.Validity).Format(time.DateOnly))
		fmt.Fprintf(stdout, "pathtrace follow --agents k8s --tls-ca %[1]s/ca.crt --tls-cert %[2]s/follower.crt --tls-key %[2]s/follower.key SELECTOR\n", r.CADir, r.Dir)
		return nil
	}
	fmt.Fprintf(stderr, "pathtrace certs: wrote %v in %s, valid until %s\n", followapi.CertFiles, r.Dir, r.Now.Add(r.Validity).Format(time.DateOnly))
	fmt.Fprintf(stdout, `# The agents' Secret (deploy/daemonset.yaml mounts it; they reload it when it changes):
kubectl -n pathtrace create secret generic pathtrace-agent-tls \
  --from-file=tls.crt=%[1]s/agent.crt --from-file=tls.key=%[1]s/agent.key --from-file=ca.crt=%[1]s/ca.crt
# The CA, public, for followers to verify the agents (pathtrace follow --agents k8s reads it):
kubectl -n pathtrace create configmap pathtrace-agent-ca --from-file=ca.crt=%[1]s/ca.crt
# A follower with Kubernetes RBAC (deploy/follower/rbac.yaml), by its kubeconfig's token:
pathtrace follow --agents k8s SELECTOR
# Or with the follower certificate, without RBAC:
pathtrace follow --agents k8s --tls-ca %[1]s/ca.crt --tls-cert %[1]s/follower.crt --tls-key %[1]s/follower.key SELECTOR
# Keep ca.key offline: it signs new followers (and agents).
`, r.Dir)
	return nil
}
