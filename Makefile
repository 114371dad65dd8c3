# pathtrace: make help lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The clang that made the committed BPF objects; check-generate needs the same one.
CLANG ?= clang-14
BIN := bin
# make build GOARCH=arm64 cross-builds (pure Go, CGO_ENABLED=0; the BPF objects of every
# architecture are committed). This machine's architecture builds into bin/, as before;
# any other into bin/linux_$(GOARCH)/, so that one never overwrites the other.
GOHOSTARCH := $(shell $(GO) env GOHOSTARCH)
GOARCH ?= $(GOHOSTARCH)
OUT := $(if $(filter $(GOHOSTARCH),$(GOARCH)),$(BIN),$(BIN)/linux_$(GOARCH))

.PHONY: krew help generate check-generate build test test-unit fuzz lint demo bench lab-up lab-down clean deps tools

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

deps: ## install the Debian packages that generate, test and demo need (as root)
	scripts/install-deps.sh

generate: ## rebuild the BPF objects and their Go bindings with $(CLANG) (bpf2go)
	@command -v $(CLANG) >/dev/null || { echo "$(CLANG) not found: run 'make deps'" >&2; exit 1; }
	cd bpf && $(GO) generate ./...
	$(GO) generate ./cmd/labredirect

check-generate: generate ## fail when the committed BPF objects differ from a fresh generate
	@git diff --exit-code --stat -- bpf/ cmd/labredirect/ || { echo "bpf/, cmd/labredirect/: generated files differ from the committed ones: run 'make generate' and commit" >&2; exit 1; }
	@new=$$(git ls-files --others --exclude-standard -- bpf/ cmd/labredirect/); [ -z "$$new" ] || { echo "generated files not committed: $$new" >&2; exit 1; }

build: ## build static binaries into bin/ (GOARCH=arm64: into bin/linux_arm64/)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(OUT)/pathtrace ./cmd/pathtrace
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -o $(OUT)/labpod ./cmd/labpod
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -o $(OUT)/labredirect ./cmd/labredirect

lint: ## gofmt, go vet and staticcheck (pinned in go.mod as a tool)
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt would change: $$bad" >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# The helm CLI, from its own module (scripts/tools/helm/go.mod pins helm.sh/helm/v4), so
# that helm's few hundred dependencies stay out of the main go.mod; go vet and
# staticcheck of ./... do not descend into a nested module. deploy/chart_test.go runs it.
tools-helm: ## build bin/helm (helm.sh/helm/v4, pinned in scripts/tools/helm/go.mod) for the chart's tests
	@v=$$($(GO) list -C scripts/tools/helm -m -f '{{.Version}}' helm.sh/helm/v4) || exit 1; \
	echo "$(GO) build -C scripts/tools/helm -o ../../../$(BIN)/helm helm.sh/helm/v4/cmd/helm ($$v)"; \
	$(GO) build -C scripts/tools/helm -trimpath -ldflags "-X helm.sh/helm/v4/internal/version.version=$$v" -o ../../../$(BIN)/helm helm.sh/helm/v4/cmd/helm

# The control-plane tests (tracer/kube/kubetest) run a real kube-apiserver, built from
# k8s.io/kubernetes at the version of client-go by the nested module of
# scripts/tools/kube-apiserver (its go.mod says why it is nested). A big binary: about
# 15 min of CPU, so it is rebuilt only when that go.mod or go.sum changes; the go build
# cache keeps later builds short.
$(BIN)/kube-apiserver: scripts/tools/kube-apiserver/go.mod scripts/tools/kube-apiserver/go.sum
	CGO_ENABLED=0 $(GO) build -C scripts/tools/kube-apiserver -trimpath -ldflags "-s -w" -o $(CURDIR)/$@ k8s.io/kubernetes/cmd/kube-apiserver

.PHONY: tools tools-kube tools-helm
tools-kube: $(BIN)/kube-apiserver ## build bin/kube-apiserver (v1.37.2) for the control-plane tests

tools: tools-helm tools-kube ## build the tools the tests run (bin/helm, bin/kube-apiserver)

test: deps tools lint ## all tests; as root the privileged suite builds the netns lab and runs too
	$(GO) test -count=1 -timeout 20m ./...

test-unit: ## the tests that need no root
	$(GO) test -count=1 ./decode/... ./exporter/...

# make fuzz finds the packages whose tests have a Fuzz function and asks each for its
# targets (go test -list), so a new target runs without a change here. An input that
# finds new code is minimized for FUZZMINIMIZETIME at most: go test's 60 s would spend
# a short run minimizing. FUZZFLAGS adds flags (-parallel 1 on a busy machine). A
# package whose TestMain needs root (cmd/pathtrace builds its lab) would run it here:
# keep fuzz targets out of such packages.
#
# go test -fuzz before Go 1.27 may fail a target with its own "context deadline
# exceeded" as FUZZTIME ends, having found nothing (go.dev/issue/75804): such a run
# is reported and not counted as a crash. A crash writes its input, and says so.
FUZZTIME ?= 10s
FUZZMINIMIZETIME ?= 1s
FUZZFLAGS ?=

fuzz: ## run every Fuzz target for FUZZTIME (10s) each; fails on a crash, whose input is left in the package's testdata/fuzz/
	@failed=; log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for dir in $$(grep -rl --include='*_test.go' --exclude-dir=testdata --exclude-dir=.git --exclude-dir=$(BIN) '^func Fuzz' . | xargs -r -n1 dirname | sort -u); do \
		list=$$($(GO) test -list '^Fuzz' $$dir) || { echo "$$list" >&2; failed="$$failed $$dir"; continue; }; \
		for t in $$(echo "$$list" | grep '^Fuzz'); do \
			echo "fuzz: $$dir $$t for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) $$dir 2>&1 | tee "$$log"; \
			[ "$${PIPESTATUS[0]}" = 0 ] && continue; \
			if grep -qx '[[:space:]]*context deadline exceeded' "$$log" && ! grep -q 'Failing input written' "$$log"; then \
				echo "fuzz: $$dir $$t: go test's \"context deadline exceeded\" at the end of FUZZTIME, no failing input (go.dev/issue/75804): not a crash" >&2; \
				continue; \
			fi; \
			failed="$$failed $$dir:$$t"; \
		done; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "fuzz: failed:$$failed. A crash's input is in its package's testdata/fuzz/TARGET/: fix the bug and commit the input as a regression test" >&2; \
		exit 1; \
	fi

bench: deps build ## benchmarks: decode events/s per core; rule lookup in 10,000 rules; agent overhead table; start, stop and memory on 250 pod veths (root); follow --agents joining 100 fake agents
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s -cpu 1 ./decode/...
	$(GO) test -run '^$$' -bench NFRules -benchtime 5x ./tracer/...
	scripts/bench.sh
	$(GO) run ./scripts/benchscale -pathtrace $(BIN)/pathtrace
	$(GO) run ./scripts/benchjoin -pathtrace $(BIN)/pathtrace

demo: deps build ## build the lab, follow a cross-node connection and a policy drop, tear down
	scripts/demo.sh

lab-up: build ## build the two-node lab (network namespaces only)
	LABPOD=$(BIN)/labpod LABREDIRECT=$(BIN)/labredirect scripts/lab.sh up

lab-down: ## tear the lab down
	scripts/lab.sh down

.PHONY: caps
caps: deps ## which Linux capability each agent feature needs on this kernel (root; a lab of its own): the table of deploy/README.md
	scripts/caps.sh

.PHONY: test-kernels
test-kernels: deps ## the kernel matrix: boot Debian's 5.10, 6.1 and 6.12 under qemu, run doctor --programs and the privileged tests of each capability there and here, print the matrix (SUITES=...)
	scripts/test-kernels.sh

.PHONY: test-arm64
test-arm64: deps ## build for arm64 and boot Debian bookworm's arm64 kernel under qemu-system-aarch64: doctor --programs, follow a ping over a veth pair
	$(MAKE) build GOARCH=arm64
	scripts/vm-arm64.sh run $(BIN)/linux_arm64/pathtrace

.PHONY: image
krew: ## the kubectl plugin's archives and krew manifest in bin/krew (VERSION, URL_BASE, ARCHES)
	scripts/krew.sh bin/krew

image: build ## container image of the agent from deploy/Containerfile (podman, else docker); IMAGE=name:tag
	@engine=$$(command -v podman || command -v docker) || { echo "image: neither podman nor docker found" >&2; exit 1; }; \
	echo "$$engine build -f deploy/Containerfile -t $(or $(IMAGE),ghcr.io/pathtrace/pathtrace:latest) ."; \
	"$$engine" build -f deploy/Containerfile -t "$(or $(IMAGE),ghcr.io/pathtrace/pathtrace:latest)" .

clean: ## remove built binaries
	rm -rf $(BIN)
