package kube

import (
	"github.com/pathtrace/pathtrace/decode"
)

func kubeSel(s string) decode.KubeSelector {
	k, ok, err := decode.ParseKubeSelector(s)
	if !ok || err != nil {
		panic("bad test selector " + s)
	}
	return k
}

func selectorStrings(sels []decode.Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}
