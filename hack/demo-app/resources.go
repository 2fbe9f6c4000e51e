package main

import (
	"syscall"
	"time"
)

// BurnPeriod is the cycle of a CPU burn: busy for its share of it, asleep for the rest, so
// the average over any window longer than a few periods is the configured share.
const BurnPeriod = 100 * time.Millisecond

// DutyCycle splits one period into the time spent busy and asleep for percent of one core.
func DutyCycle(percent int, period time.Duration) (busy, idle time.Duration) {
	percent = min(max(percent, 0), 100)
	busy = period * time.Duration(percent) / 100
	return busy, period - busy
}

// Burn uses about percent of one core until the process ends (0 does nothing).
func Burn(percent int) {
	busy, idle := DutyCycle(percent, BurnPeriod)
	if busy <= 0 {
		return
	}
	go func() {
		for {
			until := time.Now().Add(busy)
			for time.Now().Before(until) {
				// spin: the time is the point
			}
			if idle > 0 {
				time.Sleep(idle)
			}
		}
	}()
}

// PageSize is the stride at which Hold writes, so every page of the allocation is resident.
const PageSize = 4096

// Hold maps mib MiB of anonymous memory outside Go's heap and writes to every page of it, so
// it counts as resident memory (an untouched mapping would not), and keeps it until the
// process ends. Outside the heap, it leaves the garbage collector's pacing alone: a heap of
// that size would let garbage grow to twice as much before a collection, and the process's
// memory would drift with its traffic.
func Hold(mib int) []byte {
	if mib <= 0 {
		return nil
	}
	buf, err := syscall.Mmap(-1, 0, mib<<20, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic("demo-app: holding memory: " + err.Error())
	}
	for i := 0; i < len(buf); i += PageSize {
		buf[i] = 1
	}
	return buf // never unmapped: the process holds it until it ends
}
