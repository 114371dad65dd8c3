// Command kmatrix prints the kernel matrix of scripts/test-kernels.sh: for each kernel,
// the mode each part of pathtrace ran in and whether the tests that prove it passed,
// then each BPF program's verifier instruction count on each kernel. It reads one
// directory per kernel, as the script leaves them (doctor.json from `pathtrace doctor
// --programs --json`, tests.txt from the privileged tests run with -test.v, secs), and
// exits 1 when a test failed or did not run.
//
//	go run ./scripts/kmatrix DIR...
//	go run ./scripts/kmatrix -list     the tests' -test.run expression
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/pathtrace/pathtrace/scripts/kmatrix/matrix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kmatrix DIR...")
		os.Exit(2)
	}
	if os.Args[1] == "-list" {
		fmt.Printf("^(%s)$\n", strings.Join(matrix.Tests(), "|"))
		return
	}
	var rows []matrix.Kernel
	for _, dir := range os.Args[1:] {
		rows = append(rows, matrix.Read(dir))
	}
	out, ok := matrix.Print(rows)
	fmt.Print(out)
	if !ok {
		os.Exit(1)
	}
}
