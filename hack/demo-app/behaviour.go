package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultSlow is the added latency of a "-slow" tag without a number.
const DefaultSlow = 200 * time.Millisecond

// Behaviour is what an image tag asks the demo app to do.
type Behaviour struct {
	Image         string        // the whole image string, e.g. "demo:v2-errors30"
	Version       string        // e.g. "v2"
	ErrorsPercent int           // share of "/" requests answered with 500, 0..100
	Slow          time.Duration // latency added to every "/" request
	Unready       bool          // /health never passes
	CPUPercent    int           // share of one core burnt continuously, 0..100
	MemoryMiB     int           // MiB allocated, touched and held for the process's life
}

// MaxMemoryMiB bounds "-memN": a typo must not take a test host's memory.
const MaxMemoryMiB = 4096

// ParseImage reads
// `[registry/]name:<version>[-errorsNN][-slow[NNN]][-unready][-cpuNN][-memNNN]`.
// Modifiers may come in any order; dash-separated parts that are not modifiers stay part of
// the version (so "v1.2.0-rc1-slow" is version "v1.2.0-rc1"). No tag means version "latest".
func ParseImage(image string) (Behaviour, error) {
	b := Behaviour{Image: image}
	tag, ref := "latest", image
	// A digest (name@sha256:…) says nothing about behaviour: "demo:v2@sha256:…" is demo:v2.
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	// The tag follows the last ':' after the last '/', so "host:5000/demo" has no tag.
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		tag = ref[i+1:]
	}
	var version []string
	for _, part := range strings.Split(tag, "-") {
		switch {
		case strings.HasPrefix(part, "errors") && isDigits(part[len("errors"):]):
			n, _ := strconv.Atoi(part[len("errors"):])
			if n > 100 {
				return b, fmt.Errorf("image %q: errors%d is more than 100%%", image, n)
			}
			b.ErrorsPercent = n
		case part == "slow":
			b.Slow = DefaultSlow
		case strings.HasPrefix(part, "slow") && isDigits(part[len("slow"):]):
			n, _ := strconv.Atoi(part[len("slow"):])
			b.Slow = time.Duration(n) * time.Millisecond
		case part == "unready":
			b.Unready = true
		case strings.HasPrefix(part, "cpu") && isDigits(part[len("cpu"):]):
			n, _ := strconv.Atoi(part[len("cpu"):])
			if n > 100 {
				return b, fmt.Errorf("image %q: cpu%d is more than 100%% of one core", image, n)
			}
			b.CPUPercent = n
		case strings.HasPrefix(part, "mem") && isDigits(part[len("mem"):]):
			n, _ := strconv.Atoi(part[len("mem"):])
			if n > MaxMemoryMiB {
				return b, fmt.Errorf("image %q: mem%d is more than %d MiB", image, n, MaxMemoryMiB)
			}
			b.MemoryMiB = n
		default:
			version = append(version, part)
		}
	}
	b.Version = strings.Join(version, "-")
	if b.Version == "" {
		return b, fmt.Errorf("image %q: tag has no version", image)
	}
	return b, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// ErrorSpread decides which requests fail: request n (counting from 0) fails when
// floor((n+1)*p/100) > floor(n*p/100). That fails exactly p of every 100 consecutive requests,
// spread evenly, so even a small sample shows the configured share.
type ErrorSpread struct {
	percent uint64
	n       atomic.Uint64
}

func NewErrorSpread(percent int) *ErrorSpread {
	return &ErrorSpread{percent: uint64(percent)}
}

// Next reports whether the next request should fail.
func (s *ErrorSpread) Next() bool {
	n := s.n.Add(1) - 1
	return (n+1)*s.percent/100 > n*s.percent/100
}
