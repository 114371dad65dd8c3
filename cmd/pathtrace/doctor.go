package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/pathtrace/pathtrace/tracer"
)

func doctorFlags() (*pflag.FlagSet, *bool, *string) {
	fs := pflag.NewFlagSet("doctor", pflag.ContinueOnError)
	js := fs.Bool("json", false, "print the report as one JSON object")
	btf := new(string)
	kernelBTFFlag(fs, btf)
	return fs, js, btf
}

// doctor reports what this kernel and process offer and the mode each part of
// pathtrace will run in. It fails (exit 1) only when pathtrace cannot run at all.
func doctor(args []string, stdout io.Writer) error {
	fs, js, btfPath := doctorFlags()
	if err := parseFlags(fs, args, "pathtrace doctor [--json] [--kernel-btf FILE]", stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("doctor takes no arguments, got %q", fs.Args())}
	}
	r := tracer.Probe(tracer.Config{BTFPath: *btfPath})
	if *js {
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
