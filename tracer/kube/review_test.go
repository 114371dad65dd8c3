package kube

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

// fakeRBAC answers TokenReview and SubjectAccessReview as an API server would: tokens
// it knows, users RBAC allows to create follows.pathtrace.io on node-a.
func fakeRBAC(tokens map[string]string, allowed map[string]bool, calls *int) *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		*calls++
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		if u, ok := tokens[tr.Spec.Token]; ok {
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: u, Groups: []string{"system:authenticated"}}}
		} else {
			tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token, serviceaccounts \"gone\" not found"}
		}
		return true, tr, nil
	})
	c.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		ra := sar.Spec.ResourceAttributes
		sar.Status.Allowed = allowed[sar.Spec.User] && ra != nil && ra.Group == FollowGroup && ra.Resource == FollowResource &&
			ra.Verb == FollowVerb && ra.Name == "node-a"
		return true, sar, nil
	})
	return c
}

// TestReviewer keeps a fake clientset: it counts the reviews the cache saves, which a
// real API server does not show (TestAPIServer/review reviews real tokens).
func TestReviewer(t *testing.T) {
	calls := 0
	c := fakeRBAC(map[string]string{"tok-alice": "alice", "tok-bob": "bob"}, map[string]bool{"alice": true}, &calls)
	r := NewReviewer(c, "node-a", time.Minute)
	ctx := context.Background()
	if u, err := r.Review(ctx, "tok-alice"); err != nil || u != "alice" {
		t.Errorf("alice: %q %v", u, err)
	}
	if _, err := r.Review(ctx, "tok-bob"); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "bob may not create follows.pathtrace.io") {
		t.Errorf("bob (no RBAC verb): %v", err)
	}
	if _, err := r.Review(ctx, "tok-deleted-sa"); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("a deleted service account's token: %v", err)
	}
	if _, err := r.Review(ctx, ""); !errors.Is(err, ErrDenied) {
		t.Errorf("no token: %v", err)
	}
	// Decisions are cached: alice again costs no review.
	before := calls
	r.Review(ctx, "tok-alice")
	if calls != before {
		t.Errorf("alice's decision was not cached")
	}
	// Bounded.
	r.MaxCached = 2
	for _, tok := range []string{"x1", "x2", "x3", "x4"} {
		r.Review(ctx, tok)
	}
	if len(r.cache) > 2 {
		t.Errorf("%d decisions cached, bound 2", len(r.cache))
	}
}

func TestBearerToken(t *testing.T) {
	if tok, err := BearerToken(&rest.Config{Host: "https://x", BearerToken: "abc"}); err != nil || tok != "abc" {
		t.Errorf("static token: %q %v", tok, err)
	}
	if _, err := BearerToken(&rest.Config{Host: "https://x"}); err == nil || !strings.Contains(err.Error(), "no bearer token") {
		t.Errorf("no token: %v", err)
	}
}
