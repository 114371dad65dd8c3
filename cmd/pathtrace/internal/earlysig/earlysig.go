package earlysig

import (
	"os"
	"os/signal"
	"syscall"
)

// c receives the first interrupt or SIGTERM; its one slot holds a signal that came
// before the command was ready to read it.
var c = make(chan os.Signal, 1)

func init() { signal.Notify(c, os.Interrupt, syscall.SIGTERM) }

// Signals returns the channel on which interrupts and SIGTERMs arrive.
func Signals() <-chan os.Signal { return c }
