package exporter_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// An inferred reason is marked so in the text and JSON; it survives FromJSON's round trip.
func TestInferredReasonOutputs(t *testing.T) {
	j := &decode.Journey{Node: "n", Verdict: decode.Dropped, Drop: &decode.Drop{Reason: "NETFILTER_DROP",
		ReasonSource: decode.ReasonInferred, InferredFrom: "nf_hook_slow", Location: "nf_hook_slow+0x93", TimeNs: 5}}
	var buf bytes.Buffer
	tx := exporter.NewText(&buf)
	if err := tx.Write(j); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "NETFILTER_DROP (inferred from nf_hook_slow) at nf_hook_slow+0x93") {
		t.Errorf("text:\n%s", buf.String())
	}
	b, err := json.Marshal(exporter.ToJSON(j, exporter.Clock{}))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"reason":"NETFILTER_DROP","reason_source":"inferred","inferred_from":"nf_hook_slow"`)) {
		t.Errorf("json: %s", b)
	}
	j.Drop.ReasonSource, j.Drop.InferredFrom = decode.ReasonKernel, ""
	b, _ = json.Marshal(exporter.ToJSON(j, exporter.Clock{}))
	if !bytes.Contains(b, []byte(`"reason_source":"kernel"`)) {
		t.Errorf("json: %s", b)
	}
}
