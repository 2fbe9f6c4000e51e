// Command demo-app is lockgate's test application: a tiny HTTP server whose behaviour
// (version, error share, latency, readiness, CPU and memory use) comes from its image tag, so a rollout from
// demo:v1 to demo:v2-errors30 can be observed and judged for real.
//
// Environment: DEMO_IMAGE (the image string; in Docker images it is baked in as ENV),
// LISTEN_ADDR (host:port) or PORT (default 8080), INSTANCE (default: the hostname).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.SetPrefix("demo-app ")

	b, err := ParseImage(envOr("DEMO_IMAGE", "demo:latest"))
	if err != nil {
		log.Fatal(err)
	}
	instance := os.Getenv("INSTANCE")
	if instance == "" {
		instance, _ = os.Hostname()
	}
	addr := os.Getenv("LISTEN_ADDR")
	if addr == "" {
		addr = ":" + envOr("PORT", "8080")
	}

	Hold(b.MemoryMiB)
	Burn(b.CPUPercent)

	// Listen before announcing, so a bad address fails loudly and at once.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: newHandler(b, instance), ReadHeaderTimeout: 10 * time.Second}

	// SIGTERM (docker stop, the process kubelet) and SIGINT: stop accepting, let in-flight
	// requests finish, exit 0. Notify also matters as PID 1 in a container, where the
	// kernel ignores signals that have no handler.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Printf("serving %s (version %s, errors %d%%, slow %s, unready %t, cpu %d%%, mem %d MiB) on %s as %s",
		b.Image, b.Version, b.ErrorsPercent, b.Slow, b.Unready, b.CPUPercent, b.MemoryMiB,
		ln.Addr(), instance)

	select {
	case err := <-served:
		log.Fatal(err)
	case <-ctx.Done():
	}
	log.Print("signal received: draining in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Fatalf("shutdown: %v", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	log.Print("stopped")
}

func newHandler(b Behaviour, instance string) http.Handler {
	spread := NewErrorSpread(b.ErrorsPercent)
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Version", b.Version)
		if b.Unready {
			http.Error(w, "unready\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if b.Slow > 0 {
			select {
			case <-time.After(b.Slow):
			case <-r.Context().Done(): // the client gave up; nobody reads the answer
				return
			}
		}
		status := http.StatusOK
		if spread.Next() {
			status = http.StatusInternalServerError
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Version", b.Version)
		w.Header().Set("X-Instance", instance)
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"version": b.Version, "image": b.Image, "instance": instance, "status": status,
		})
	})
	return mux
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
