package kube

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// Who may follow through an agent, as Kubernetes RBAC says: the verb on the resource
// below, in the agent's node's name. deploy/rbac.yaml ships the ClusterRole
// pathtrace-follower that grants it; no such resource exists in the API server, and
// RBAC does not need it to.
const (
	FollowGroup    = "pathtrace.io"
	FollowResource = "follows"
	FollowVerb     = "create"
)

// Reviewer decides whether the owner of a bearer token may follow through this node's
// agent: TokenReview says who the token is, SubjectAccessReview whether they may
// create follows.pathtrace.io named after the node. Decisions are kept for TTL (a
// refusal for less), at most MaxCached of them, keyed by the token's SHA-256.
type Reviewer struct {
	client    kubernetes.Interface
	node      string
	ttl       time.Duration
	mu        sync.Mutex
	cache     map[[32]byte]decision
	MaxCached int
	now       func() time.Time
}

type decision struct {
	user    string
	err     error
	expires time.Time
}

// NewReviewer reviews tokens for node's agent with client (the agent's own service
// account, which needs the built-in ClusterRole system:auth-delegator).
func NewReviewer(client kubernetes.Interface, node string, ttl time.Duration) *Reviewer {
	return &Reviewer{client: client, node: node, ttl: ttl, cache: map[[32]byte]decision{}, MaxCached: 1024, now: time.Now}
}

// ErrDenied is a token the API server does not know, or whose owner RBAC does not
// allow to follow.
var ErrDenied = errors.New("denied")

// Review returns the token's user ("alice", "system:serviceaccount:ns:name"), or why
// not. The token itself is never logged or kept, only its hash.
func (r *Reviewer) Review(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", fmt.Errorf("%w: no token", ErrDenied)
	}
	key := sha256.Sum256([]byte(token))
	now := r.now()
	r.mu.Lock()
	if d, ok := r.cache[key]; ok && now.Before(d.expires) {
		r.mu.Unlock()
		return d.user, d.err
	}
	r.mu.Unlock()
	user, err := r.review(ctx, token)
	ttl := r.ttl
	if err != nil {
		ttl /= 4
		if !errors.Is(err, ErrDenied) {
			ttl = 0 // the API server's trouble: ask again next time
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ttl > 0 {
		if len(r.cache) >= r.MaxCached {
			for k, d := range r.cache {
				if !now.Before(d.expires) {
					delete(r.cache, k)
				}
			}
		}
		for k := range r.cache {
			if len(r.cache) < r.MaxCached {
				break
			}
			delete(r.cache, k) // all still valid: any one goes
		}
		r.cache[key] = decision{user: user, err: err, expires: now.Add(ttl)}
	}
	return user, err
}

func (r *Reviewer) review(ctx context.Context, token string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr, err := r.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenReview: %w", err)
	}
	if !tr.Status.Authenticated {
		why := tr.Status.Error
		if why == "" {
			why = "the API server does not know the token"
		}
		return "", fmt.Errorf("%w: %s", ErrDenied, why)
	}
	u := tr.Status.User
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := r.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Username, Groups: u.Groups, UID: u.UID, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Group: FollowGroup, Resource: FollowResource, Verb: FollowVerb, Name: r.node},
	}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("SubjectAccessReview: %w", err)
	}
	if !sar.Status.Allowed || sar.Status.Denied {
		return "", fmt.Errorf("%w: %s may not %s %s.%s %q (RBAC: bind the ClusterRole pathtrace-follower)", ErrDenied, u.Username, FollowVerb, FollowResource, FollowGroup, r.node)
	}
	return u.Username, nil
}

// BearerToken is the token the kubeconfig's credentials put on a request: a static
// token, a token file, or what an exec or auth provider plugin returns. A kubeconfig
// that authenticates with a client certificate has none.
func BearerToken(rc *rest.Config) (string, error) {
	var got string
	capture := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		got = req.Header.Get("Authorization")
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
	})
	tc, err := rc.TransportConfig()
	if err != nil {
		return "", err
	}
	rt, err := transport.HTTPWrappersForConfig(tc, capture)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequest(http.MethodGet, "https://kubernetes.invalid/", nil)
	if _, err := rt.RoundTrip(req); err != nil {
		return "", fmt.Errorf("kubeconfig credentials: %w", err)
	}
	tok, ok := strings.CutPrefix(got, "Bearer ")
	if !ok || tok == "" {
		return "", errors.New("the kubeconfig's credentials carry no bearer token (a client certificate?): follow with --tls-cert and --tls-key instead")
	}
	return tok, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
