// Package stat is the benchmarks' arithmetic (see stat.go): medians, standard errors,
// ratios and target checks, tested here, so that the bench scripts only run things.
// It must not run or measure anything itself.
package stat
