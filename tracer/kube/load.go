package kube

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config says where the Kubernetes names come from and how to report trouble with them.
type Config struct {
	// Kubeconfig is the path of a kubeconfig file; "" chooses one as Load describes.
	Kubeconfig string
	// Node is the agent's own node ("" in the CLI). It only matters with NodePodsOnly.
	Node string
	// NodePodsOnly watches only the pods on Node (field selector spec.nodeName), for
	// clusters too large for every agent to hold every pod. Pods on other nodes are then
	// named only when a Service's EndpointSlices point at them. Ignored when Node is "".
	NodePodsOnly bool
	// SyncTimeout bounds how long Start waits for the first full list of every
	// resource; 0 means 5s.
	SyncTimeout time.Duration
	// Warn receives each warning: at most one per distinct kind of failure (forbidden,
	// unauthorized, unreachable, ...), however often the informers retry. nil: dropped.
	Warn func(string)
}

// DefaultSyncTimeout is Start's wait when Config.SyncTimeout is 0.
const DefaultSyncTimeout = 5 * time.Second

// Load finds the API server's configuration and makes a client for it. It tries, in
// order: cfg.Kubeconfig; the in-cluster configuration when KUBERNETES_SERVICE_HOST is
// set (a pod's service account); the files in $KUBECONFIG; ~/.kube/config.
//
// The string says where the names come from ("kubeconfig /root/.kube/config, context
// lab") or, with a nil client, why they are off ("names off: no kubeconfig or
// in-cluster config"). Finding no configuration is not an error: pathtrace then works
// with addresses only. A kubeconfig named in cfg.Kubeconfig that is missing or broken
// is an error.
func Load(cfg Config) (kubernetes.Interface, string, error) {
	rc, desc, err := LoadREST(cfg)
	if err != nil || rc == nil {
		return nil, desc, err
	}
	return newClient(rc, desc)
}

// LoadREST is Load's configuration, before a client is made of it (nil and why not
// when none is found).
func LoadREST(cfg Config) (*rest.Config, string, error) {
	if cfg.Kubeconfig != "" {
		rc, desc, err := fromKubeconfig(cfg.Kubeconfig, []string{cfg.Kubeconfig})
		if err != nil {
			return nil, "", fmt.Errorf("kubeconfig %s: %w: give a readable kubeconfig, or leave --kubeconfig out to work with addresses only", cfg.Kubeconfig, err)
		}
		return rc, desc, nil
	}
	var notes []string
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		rc, err := rest.InClusterConfig()
		if err == nil {
			return rc, "in-cluster config (service account)", nil
		}
		notes = append(notes, "in-cluster config: "+err.Error())
	}
	var files []string
	var where string
	if env := os.Getenv("KUBECONFIG"); env != "" {
		files = filepath.SplitList(env)
		where = "$KUBECONFIG=" + env
	} else if home, err := os.UserHomeDir(); err == nil {
		files = []string{filepath.Join(home, ".kube", "config")}
		where = files[0]
	}
	var found []string
	for _, f := range files {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err == nil {
			found = append(found, f)
		}
	}
	if len(found) == 0 {
		switch {
		case len(notes) > 0:
			return nil, "names off: " + notes[0], nil
		case os.Getenv("KUBECONFIG") != "":
			return nil, "names off: no file of " + where + " exists, and no in-cluster config", nil
		}
		return nil, "names off: no kubeconfig or in-cluster config", nil
	}
	rc, desc, err := fromKubeconfig("", found)
	if err != nil {
		return nil, fmt.Sprintf("names off: kubeconfig %s: %v", where, err), nil
	}
	return rc, desc, nil
}

// fromKubeconfig reads the files (merged as kubectl merges them) and returns the rest
// configuration of their current context.
func fromKubeconfig(explicit string, files []string) (*rest.Config, string, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: explicit, Precedence: files}
	raw, err := rules.Load()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, "", errors.New("no such file")
		}
		return nil, "", err
	}
	if raw.CurrentContext == "" {
		return nil, "", errors.New("no current context")
	}
	rc, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, "", err
	}
	name := explicit
	if name == "" {
		name = strings.Join(files, string(filepath.ListSeparator))
	}
	return rc, fmt.Sprintf("kubeconfig %s, context %s", name, raw.CurrentContext), nil
}

func newClient(rc *rest.Config, desc string) (kubernetes.Interface, string, error) {
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "pathtrace"
	// Informers list four resources at start, then only watch: client-go's defaults
	// (5 QPS, burst 10) are enough and protect the API server from a DaemonSet.
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes client from %s: %w", desc, err)
	}
	return client, desc, nil
}
