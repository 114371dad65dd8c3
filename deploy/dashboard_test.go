package deploy_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const dashboardFile = "chart/files/pathtrace-dashboard.json"

// grafanaDashboard is the part of Grafana's dashboard JSON the tests read.
type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name     string          `json:"name"`
			Type     string          `json:"type"`
			Query    json.RawMessage `json:"query"`
			AllValue string          `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashPanel `json:"panels"`
}

// dashPanel is one panel of it.
type dashPanel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Exemplar   bool            `json:"exemplar"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
}

var metricName = regexp.MustCompile(`\b(pathtrace_[a-z_]+|up)\{([^}]*)\}`)

// TestDashboard checks the dashboard's structure: valid JSON, a uid, unique panel ids
// and titles, the datasource, job and node variables, every panel but text ones with a
// query on ${datasource}, and every selector of a query filtered by $job and $node (so
// that the node selector narrows every panel).
func TestDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: want both", d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	for name, typ := range map[string]string{"datasource": "datasource", "job": "query", "node": "query"} {
		if vars[name] != typ {
			t.Errorf("variable %s: type %q, want %q", name, vars[name], typ)
		}
	}
	ids, titles := map[int]bool{}, map[string]bool{}
	queries := 0
	for _, p := range d.Panels {
		if p.ID == 0 || ids[p.ID] || titles[p.Title] || p.Title == "" {
			t.Errorf("panel %d %q: id and title must be set and unique", p.ID, p.Title)
		}
		ids[p.ID], titles[p.Title] = true, true
		if p.Type == "text" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if !strings.Contains(string(p.Datasource), `"${datasource}"`) {
			t.Errorf("panel %q: datasource %s, want ${datasource}", p.Title, p.Datasource)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			queries++
			if strings.TrimSpace(q.Expr) == "" || q.RefID == "" || refs[q.RefID] {
				t.Errorf("panel %q: query %q with refId %q: empty or repeated", p.Title, q.Expr, q.RefID)
			}
			refs[q.RefID] = true
			if !strings.Contains(string(q.Datasource), `"${datasource}"`) {
				t.Errorf("panel %q %s: datasource %s, want ${datasource}", p.Title, q.RefID, q.Datasource)
			}
			if strings.Contains(q.Expr, "pathtrace_hop_latency_seconds_bucket") && !q.Exemplar {
				t.Errorf("panel %q %s: latency without exemplars (the flows to follow)", p.Title, q.RefID)
			}
			sels := metricName.FindAllStringSubmatch(q.Expr, -1)
			if len(sels) == 0 {
				t.Errorf("panel %q %s: no metric selector in %q", p.Title, q.RefID, q.Expr)
			}
			for _, s := range sels {
				if !strings.Contains(s[2], `job=~"$job"`) || !strings.Contains(s[2], `node=~"$node"`) {
					t.Errorf("panel %q %s: %s{%s} is not filtered by $job and $node", p.Title, q.RefID, s[1], s[2])
				}
			}
		}
	}
	// The panels the issue asks for, by the metric each one shows.
	var all strings.Builder
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			all.WriteString(q.Expr + "\n")
		}
	}
	for _, m := range []string{"pathtrace_drops_total", "pathtrace_hop_latency_seconds_bucket", "pathtrace_flagged_flows_total",
		"pathtrace_events_lost_total", "pathtrace_counters_up", "pathtrace_pod_drops_total", "histogram_quantile(0.99", "histogram_quantile(0.5"} {
		if !strings.Contains(all.String(), m) {
			t.Errorf("no panel queries %s", m)
		}
	}
	if !slices.ContainsFunc(d.Panels, func(p dashPanel) bool {
		return p.Type == "heatmap"
	}) {
		t.Errorf("no heatmap panel")
	}
	if !strings.Contains(all.String(), "pathtrace follow --agents k8s") {
		t.Errorf("no query builds the pathtrace follow command from a series' labels")
	}
	t.Logf("%d panels, %d queries, variables %v", len(d.Panels), queries, vars)
}
