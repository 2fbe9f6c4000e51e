package main

import (
	"testing"
	"time"
)

func TestParseResourceModifiers(t *testing.T) {
	cases := []struct {
		image string
		want  Behaviour
	}{
		{"demo:v2-cpu60", Behaviour{Version: "v2", CPUPercent: 60}},
		{"demo:v2-mem200", Behaviour{Version: "v2", MemoryMiB: 200}},
		{"demo:v1-mem100-cpu5", Behaviour{Version: "v1", MemoryMiB: 100, CPUPercent: 5}},
		{"demo:v2-cpu100", Behaviour{Version: "v2", CPUPercent: 100}},
		{"demo:v2-errors10-mem4096", Behaviour{Version: "v2", ErrorsPercent: 10, MemoryMiB: 4096}},
		// Not modifiers: they stay part of the version.
		{"demo:v2-cpu", Behaviour{Version: "v2-cpu"}},
		{"demo:v2-memx", Behaviour{Version: "v2-memx"}},
	}
	for _, c := range cases {
		got, err := ParseImage(c.image)
		if err != nil {
			t.Errorf("ParseImage(%q): %v", c.image, err)
			continue
		}
		c.want.Image = c.image
		if got != c.want {
			t.Errorf("ParseImage(%q) = %+v, want %+v", c.image, got, c.want)
		}
	}
	for _, bad := range []string{"demo:v2-cpu101", "demo:v2-mem4097", "demo:cpu10", "demo:mem5"} {
		if _, err := ParseImage(bad); err == nil {
			t.Errorf("ParseImage(%q): want an error", bad)
		}
	}
}

func TestDutyCycle(t *testing.T) {
	for _, c := range []struct {
		percent    int
		busy, idle time.Duration
	}{
		{0, 0, 100 * time.Millisecond},
		{60, 60 * time.Millisecond, 40 * time.Millisecond},
		{100, 100 * time.Millisecond, 0},
		{150, 100 * time.Millisecond, 0},
	} {
		busy, idle := DutyCycle(c.percent, 100*time.Millisecond)
		if busy != c.busy || idle != c.idle {
			t.Errorf("DutyCycle(%d) = %v, %v; want %v, %v", c.percent, busy, idle, c.busy, c.idle)
		}
	}
}

func TestHoldTouchesEveryPage(t *testing.T) {
	buf := Hold(2)
	if len(buf) != 2<<20 {
		t.Fatalf("Hold(2) holds %d bytes, want %d", len(buf), 2<<20)
	}
	for i := 0; i < len(buf); i += PageSize {
		if buf[i] == 0 {
			t.Fatalf("page at %d not touched", i)
		}
	}
	if Hold(0) != nil {
		t.Error("Hold(0) allocated")
	}
}
