package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Name is what an address is in the cluster.
type Name struct {
	Kind       string // "pod", "service", "node"; "" when unknown
	Namespace  string // "" for a node
	Name       string
	Unresolved bool // names are on but the API server has not answered yet: unknown for now
}

// String gives "namespace/name" for a pod or a Service, "node/NAME" for a node, and ""
// when the address is not known (or not known yet).
func (n Name) String() string {
	switch n.Kind {
	case "pod", "service":
		return n.Namespace + "/" + n.Name
	case "node":
		return "node/" + n.Name
	}
	return ""
}

// The watched resources, in the order their failures are reported.
const (
	resPods     = "pods"
	resServices = "services"
	resSlices   = "endpointslices"
	resNodes    = "nodes"
)

// Resolver names addresses after pods, Services and nodes, and turns pod and Service
// selectors into addresses, from shared informers. Its methods are safe for concurrent
// use, and on a nil *Resolver (names off).
type Resolver struct {
	client  kubernetes.Interface
	cfg     Config
	factory informers.SharedInformerFactory
	pods    cache.SharedIndexInformer
	svcs    cache.SharedIndexInformer
	slices  cache.SharedIndexInformer
	nodes   cache.SharedIndexInformer

	mu       sync.Mutex
	started  bool               // Start was called
	waited   bool               // Start's wait is over: failures are now warned about as they come
	failures map[string]failure // by resource: the last failure since its last success
	warned   map[string]bool    // failure kinds already warned about
}

// failure is what went wrong with one resource, with a kind for deduplication.
type failure struct {
	kind string // "forbidden", "unauthorized", "unreachable", "error"; "timeout" for Start's wait
	msg  string // the cause, in the API server's words where it gave some
	hint string // what it means or what to do, "" if nothing to add
}

func (f failure) String() string {
	if f.hint == "" {
		return f.msg
	}
	return f.msg + " (" + f.hint + ")"
}

// NewResolver prepares the informers; Start runs them. A nil client gives a resolver
// whose names are off.
func NewResolver(client kubernetes.Interface, cfg Config) *Resolver {
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = DefaultSyncTimeout
	}
	r := &Resolver{client: client, cfg: cfg, failures: map[string]failure{}, warned: map[string]bool{}}
	if client == nil {
		return r
	}
	r.factory = informers.NewSharedInformerFactoryWithOptions(client, 0)
	podSelector := ""
	if cfg.NodePodsOnly && cfg.Node != "" {
		podSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.Node).String()
	}
	core, disc := client.CoreV1(), client.DiscoveryV1()
	r.pods = r.informer(&corev1.Pod{}, resPods,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = podSelector
			return core.Pods("").List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = podSelector
			return core.Pods("").Watch(ctx, o)
		},
		cache.Indexers{ipIndex: podIPs}, trimPod)
	r.svcs = r.informer(&corev1.Service{}, resServices,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return core.Services("").List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return core.Services("").Watch(ctx, o)
		},
		cache.Indexers{ipIndex: serviceIPs}, trimService)
	r.slices = r.informer(&discoveryv1.EndpointSlice{}, resSlices,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return disc.EndpointSlices("").List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return disc.EndpointSlices("").Watch(ctx, o)
		},
		cache.Indexers{ipIndex: sliceIPs, serviceIndex: sliceService}, trimSlice)
	r.nodes = r.informer(&corev1.Node{}, resNodes,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return core.Nodes().List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return core.Nodes().Watch(ctx, o)
		},
		cache.Indexers{ipIndex: nodeIPs}, trimNode)
	return r
}

// informer builds the shared informer of one resource through the factory. Its list
// and watch calls report their errors to the resolver as they happen, retries
// included (the reflector retries a refused connection without telling its error
// handler), and its error handler replaces client-go's, which would log every retry.
func (r *Resolver) informer(obj runtime.Object, resource string,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchf func(context.Context, metav1.ListOptions) (watch.Interface, error),
	indexers cache.Indexers, trim cache.TransformFunc) cache.SharedIndexInformer {
	return r.factory.InformerFor(obj, func(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		lw := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				l, err := list(ctx, o)
				r.observe(resource, err)
				return l, err
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				w, err := watchf(ctx, o)
				r.observe(resource, err)
				return w, err
			},
		}
		inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, client), obj,
			cache.SharedIndexInformerOptions{ResyncPeriod: resync, Indexers: indexers, ObjectDescription: resource})
		// Both fail only on a started informer, and this one is new.
		_ = inf.SetTransform(trim)
		_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			r.observe(resource, err)
		})
		return inf
	})
}

// Start runs the informers until ctx is done and waits up to Config.SyncTimeout for
// their first lists. If they are not all in by then (API server unreachable, access
// forbidden, ...), Start warns once, naming the cause, and returns nil: tracing goes on
// with addresses, names of what is not listed are Unresolved, and the informers keep
// retrying so that names come when the cause clears. Start fails only when ctx ends
// first, or when called twice. On a resolver with names off it does nothing.
func (r *Resolver) Start(ctx context.Context) error {
	if r == nil || r.client == nil {
		return nil
	}
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("kubernetes names: Start called twice")
	}
	r.started = true
	r.mu.Unlock()

	r.factory.Start(ctx.Done())
	deadline := time.NewTimer(r.cfg.SyncTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
wait:
	for len(r.unsynced()) > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			break wait
		case <-tick.C:
		}
	}

	unsynced := r.unsynced()
	r.mu.Lock()
	r.waited = true
	var msg string
	if len(unsynced) > 0 {
		f, ok := r.worst(unsynced)
		if !ok {
			f = failure{kind: "timeout", msg: fmt.Sprintf("%s not listed within %v", strings.Join(unsynced, ", "), r.cfg.SyncTimeout)}
		}
		r.warned[f.kind] = true
		msg = "kubernetes names unresolved: " + f.String() + ": tracing goes on with addresses; names come when this clears"
	}
	r.mu.Unlock()
	if msg != "" && r.cfg.Warn != nil {
		r.cfg.Warn(msg)
	}
	return nil
}

// observe records the outcome of a list or watch call of resource. Before Start's wait
// is over failures are only recorded (Start reports them); after it, the first failure
// of each kind is warned about.
func (r *Resolver) observe(resource string, err error) {
	if err == nil {
		r.mu.Lock()
		delete(r.failures, resource)
		r.mu.Unlock()
		return
	}
	if routine(err) {
		return
	}
	f := classify(resource, err)
	synced := r.informerOf(resource).HasSynced()
	r.mu.Lock()
	r.failures[resource] = f
	var msg string
	if r.waited && !r.warned[f.kind] {
		r.warned[f.kind] = true
		if synced {
			msg = "kubernetes names may be stale: " + f.String() + ": tracing goes on"
		} else {
			msg = "kubernetes names unresolved: " + f.String() + ": tracing goes on with addresses; names come when this clears"
		}
	}
	r.mu.Unlock()
	if msg != "" && r.cfg.Warn != nil {
		r.cfg.Warn(msg)
	}
}

// routine reports errors that are part of watching: a watch that ends, a resource
// version too old (the informer lists again), the server asking to slow down, and
// the end of the resolver's own context.
func routine(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || apierrors.IsTooManyRequests(err)
}

// classify names the failure after the API server's own message (or the HTTP client's)
// and says what to do about the common kinds.
func classify(resource string, err error) failure {
	msg := err.Error()
	var st apierrors.APIStatus
	var ue *url.Error
	if errors.As(err, &st) && st.Status().Message != "" {
		msg = st.Status().Message
	} else if errors.As(err, &ue) {
		// Without the query, which is the informer's business and long.
		where := ue.URL
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery = ""
			where = u.String()
		}
		msg = fmt.Sprintf("%s %q: %v", ue.Op, where, ue.Err)
	}
	if !strings.HasPrefix(msg, resource) {
		msg = resource + ": " + msg
	}
	var op *net.OpError
	var dns *net.DNSError
	switch {
	case apierrors.IsForbidden(err):
		return failure{"forbidden", msg, "RBAC: pathtrace needs get, list and watch on pods, services, nodes and endpointslices.discovery.k8s.io"}
	case apierrors.IsUnauthorized(err):
		return failure{"unauthorized", msg, "the API server did not accept the credentials"}
	case errors.As(err, &op), errors.As(err, &dns), errors.Is(err, context.DeadlineExceeded),
		apierrors.IsServiceUnavailable(err), apierrors.IsTimeout(err), apierrors.IsServerTimeout(err):
		return failure{"unreachable", msg, "API server unreachable"}
	}
	return failure{"error", msg, ""}
}

// worst is the failure to report among those of the resources given: an access
// problem first, as it will not clear by itself; resources in their fixed order.
func (r *Resolver) worst(resources []string) (failure, bool) {
	rank := map[string]int{"forbidden": 4, "unauthorized": 3, "unreachable": 2, "error": 1}
	var best failure
	for _, res := range resources {
		if f, ok := r.failures[res]; ok && rank[f.kind] > rank[best.kind] {
			best = f
		}
	}
	if best.kind == "" {
		return failure{}, false
	}
	var same []string
	for _, res := range resources {
		if f, ok := r.failures[res]; ok && f.kind == best.kind {
			same = append(same, res)
		}
	}
	if len(same) > 1 {
		best.msg += " (likewise " + strings.Join(same[1:], ", ") + ")"
	}
	return best, true
}

func (r *Resolver) informerOf(resource string) cache.SharedIndexInformer {
	switch resource {
	case resPods:
		return r.pods
	case resServices:
		return r.svcs
	case resSlices:
		return r.slices
	}
	return r.nodes
}

// unsynced lists the resources whose first list is not in yet.
func (r *Resolver) unsynced() []string {
	var out []string
	for _, res := range []string{resPods, resServices, resSlices, resNodes} {
		if !r.informerOf(res).HasSynced() {
			out = append(out, res)
		}
	}
	return out
}

// Name says what the address is: a pod (hostNetwork pods excepted: their address is
// their node's), a Service's cluster IP, or a node's internal or external address.
// When the address is claimed by several pods, a live pod wins over one being deleted,
// which wins over one that ended. The zero Name means names are off or the address is
// unknown; Unresolved means it is not known yet because the API server has not
// answered for all resources.
func (r *Resolver) Name(a netip.Addr) Name {
	if r == nil || r.client == nil || !a.IsValid() {
		return Name{}
	}
	key := a.Unmap().String()
	pod := r.bestPod(key)
	if pod != nil && !ended(pod) {
		return Name{Kind: "pod", Namespace: pod.Namespace, Name: pod.Name}
	}
	if objs, _ := r.svcs.GetIndexer().ByIndex(ipIndex, key); len(objs) > 0 {
		s := firstMeta(objs)
		return Name{Kind: "service", Namespace: s.GetNamespace(), Name: s.GetName()}
	}
	if objs, _ := r.nodes.GetIndexer().ByIndex(ipIndex, key); len(objs) > 0 {
		return Name{Kind: "node", Name: firstMeta(objs).GetName()}
	}
	if n, ok := r.sliceTarget(key); ok {
		return n
	}
	if pod != nil {
		return Name{Kind: "pod", Namespace: pod.Namespace, Name: pod.Name}
	}
	if len(r.unsynced()) > 0 {
		return Name{Unresolved: true}
	}
	return Name{}
}

// bestPod is the pod that names the address among those claiming it, nil if none.
func (r *Resolver) bestPod(key string) *corev1.Pod {
	objs, _ := r.pods.GetIndexer().ByIndex(ipIndex, key)
	var best *corev1.Pod
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && (best == nil || better(p, best)) {
			best = p
		}
	}
	return best
}

// sliceTarget names an address after the pod an EndpointSlice says is behind it: the
// way to name pods on other nodes when only the node's own pods are watched.
func (r *Resolver) sliceTarget(key string) (Name, bool) {
	objs, _ := r.slices.GetIndexer().ByIndex(ipIndex, key)
	var best Name
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		for _, e := range s.Endpoints {
			ref := e.TargetRef
			if ref == nil || ref.Kind != "Pod" || !hasAddr(e.Addresses, key) {
				continue
			}
			n := Name{Kind: "pod", Namespace: ref.Namespace, Name: ref.Name}
			if n.Namespace == "" {
				n.Namespace = s.Namespace
			}
			if best.Kind == "" || n.String() < best.String() {
				best = n
			}
		}
	}
	return best, best.Kind != ""
}

func hasAddr(addrs []string, key string) bool {
	for _, a := range addrs {
		if ipKey(a) == key {
			return true
		}
	}
	return false
}

// firstMeta is the object with the smallest namespace/name, for a stable answer.
func firstMeta(objs []any) metav1.Object {
	var best metav1.Object
	for _, o := range objs {
		m, ok := o.(metav1.Object)
		if !ok {
			continue
		}
		if best == nil || m.GetNamespace()+"/"+m.GetName() < best.GetNamespace()+"/"+best.GetName() {
			best = m
		}
	}
	return best
}

// Status says in one line whether names are on: "names on (N pods, M services)",
// "names off: why", or "names unresolved: why".
func (r *Resolver) Status() string {
	if r == nil || r.client == nil {
		return "names off: no kubeconfig or in-cluster config"
	}
	unsynced := r.unsynced()
	if len(unsynced) == 0 {
		return fmt.Sprintf("names on (%d pods, %d services)", len(r.pods.GetStore().ListKeys()), len(r.svcs.GetStore().ListKeys()))
	}
	r.mu.Lock()
	f, ok := r.worst(unsynced)
	started := r.started
	r.mu.Unlock()
	switch {
	case ok:
		return "names unresolved: " + f.String()
	case !started:
		return "names unresolved: not started"
	}
	return "names unresolved: waiting for the API server to list " + strings.Join(unsynced, ", ")
}
