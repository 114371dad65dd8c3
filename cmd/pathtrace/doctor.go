package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/pathtrace/pathtrace/tracer"
)

type doctorOpts struct {
	json, programs bool
	btf, netns     string
	ifaces         []string
}

func doctorFlags() (*pflag.FlagSet, *doctorOpts) {
	fs := pflag.NewFlagSet("doctor", pflag.ContinueOnError)
	o := &doctorOpts{}
	fs.BoolVar(&o.json, "json", false, "print the report as one JSON object")
	fs.BoolVar(&o.programs, "programs", false, "also load every BPF program of pathtrace as the tracer would (follow, agent, whole packets) and report what the verifier made of each: instructions processed, or why it refused")
	fs.StringVar(&o.netns, "netns", "", "network namespace whose interfaces to show (a name under /run/netns or a path); default: pathtrace's own")
	fs.StringSliceVar(&o.ifaces, "ifaces", nil, "show what these glob patterns match instead of what discovery finds")
	kernelBTFFlag(fs, &o.btf)
	return fs, o
}

// doctorUsage is the synopsis of pathtrace doctor.
const doctorUsage = "pathtrace doctor [--json] [--programs] [--netns NS] [--ifaces GLOBS] [--kernel-btf FILE]"

// doctor reports what this kernel and process offer and the mode each part of
// pathtrace will run in. It fails (exit 1) only when pathtrace cannot run at all.
func doctor(args []string, stdout io.Writer) error {
	fs, o := doctorFlags()
	if err := parseFlags(fs, args, doctorUsage, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("doctor takes no arguments, got %q", fs.Args())}
	}
	r := tracer.Probe(tracer.Config{BTFPath: o.btf})
	if o.programs && r.Fatal == "" {
		checks, err := tracer.CheckPrograms(tracer.Config{BTFPath: o.btf})
		if err != nil {
			r.Fatal = "load pathtrace's programs: " + err.Error()
		}
		r.AddChecks(checks)
	}
	nw := tracer.Discover(tracer.Config{Netns: o.netns, Ifaces: o.ifaces})
	r.Network = &nw
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		fmt.Fprint(stdout, r.Text())
	}
	if r.Fatal != "" {
		return errors.New(r.Fatal)
	}
	if nw.Error != "" && (o.netns != "" || len(o.ifaces) > 0) {
		return errors.New(nw.Error) // asked about a namespace or patterns that do not work
	}
	return nil
}
