// Package matrix builds the kernel matrix of scripts/test-kernels.sh from what each
// kernel's run left behind: pathtrace doctor's report (modes, programs, verifier counts)
// and the privileged tests' verdicts. It only reads files and formats; it runs nothing.
package matrix
