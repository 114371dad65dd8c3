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
	btf            string
}

func doctorFlags() (*pflag.FlagSet, *doctorOpts) {
	fs := pflag.NewFlagSet("doctor", pflag.ContinueOnError)
	o := &doctorOpts{}
	fs.BoolVar(&o.json, "json", false, "print the report as one JSON object")
	fs.BoolVar(&o.programs, "programs", false, "also load every BPF program of pathtrace as the tracer would (follow, agent, whole packets) and report what the verifier made of each: instructions processed, or why it refused")
	kernelBTFFlag(fs, &o.btf)
	return fs, o
}

// doctorUsage is the synopsis of pathtrace doctor.
const doctorUsage = "pathtrace doctor [--json] [--programs] [--kernel-btf FILE]"

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
	return nil
}
