package grpchealth

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckAgainstHandler(t *testing.T) {
	var serving atomic.Bool
	serving.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(serving.Load), Protocols: Protocols(), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	for _, tc := range []struct {
		name    string
		serving bool
		service string
		want    int
	}{
		{"serving", true, "", StatusServing},
		{"serving named service", true, "grpc.health.v1.Health", StatusServing},
		{"not serving", false, "", StatusNotServing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serving.Store(tc.serving)
			got, err := Check(t.Context(), ln.Addr().String(), tc.service)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("status = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCheckFailsWithoutServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if _, err := Check(t.Context(), addr, ""); err == nil {
		t.Error("Check against a closed port succeeded")
	}
}
