package deploy_test

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// krewPlugin is the part of krew's Plugin manifest (v1alpha2) the test checks.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// scripts/krew.sh makes an archive whose sha256 the manifest carries, holding
// kubectl-pathtrace, which runs as the plugin (its own usage and version line).
func TestKrewManifest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	out := t.TempDir()
	cmd := exec.Command("../scripts/krew.sh", out)
	cmd.Env = append(os.Environ(), "VERSION=v9.8.7", "URL_BASE=https://example.invalid/rel", "ARCHES=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("krew.sh: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(filepath.Join(out, "pathtrace.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		t.Fatalf("manifest: %v\n%s", err, raw)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" || p.Metadata.Name != "pathtrace" ||
		p.Spec.Version != "v9.8.7" || p.Spec.ShortDescription == "" || len(p.Spec.Platforms) != 1 {
		t.Fatalf("manifest:\n%s", raw)
	}
	pl := p.Spec.Platforms[0]
	if pl.Selector.MatchLabels["os"] != "linux" || pl.Selector.MatchLabels["arch"] != "amd64" || pl.Bin != "kubectl-pathtrace" ||
		pl.URI != "https://example.invalid/rel/kubectl-pathtrace_linux_amd64.tar.gz" {
		t.Errorf("platform: %+v", pl)
	}
	archive := filepath.Join(out, "kubectl-pathtrace_linux_amd64.tar.gz")
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != pl.SHA256 {
		t.Errorf("sha256 %s in the manifest, the archive's is %x", pl.SHA256, sum)
	}
	// Unpack as krew does, and run the plugin.
	dir := t.TempDir()
	zr, err := gzip.NewReader(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
		f, err := os.OpenFile(filepath.Join(dir, filepath.Base(h.Name)), os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, io.LimitReader(tr, 512<<20)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for _, f := range pl.Files {
		if !names[f.From] {
			t.Errorf("files: %s not in the archive (%v)", f.From, names)
		}
	}
	v, err := exec.Command(filepath.Join(dir, "kubectl-pathtrace"), "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(v)) != "kubectl pathtrace v9.8.7" {
		t.Errorf("kubectl-pathtrace version: %v %q", err, v)
	}
}
